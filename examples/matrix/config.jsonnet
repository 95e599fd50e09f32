// One stage per Go version, then one that waits for them all.
// The versions come from the go_versions external variable:
//   errand run examples/matrix --ext-str go_versions=1.25,1.26
local versions = std.split(std.native('extVarOr')('go_versions', '1.25,1.26'), ',');

local stageName(v) = 'go-' + std.strReplace(v, '.', '_');

local goStage(v) = {
  name: stageName(v),
  environment: { GO_VERSION: v },
  steps: [
    {
      name: 'build',
      commands: ['echo "building with Go $GO_VERSION"'],
    },
    {
      name: 'test',
      commands: ['echo "testing with Go $GO_VERSION"'],
    },
  ],
};

{
  stages: [goStage(v) for v in versions] + [
    {
      name: 'summary',
      depends: [stageName(v) for v in versions],
      steps: [{ name: 'report', commands: ['echo "tested %d Go versions"' % std.length(versions)] }],
    },
  ],
}
