package main

import (
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/alecthomas/units"

	"github.com/errandci/errand/internal/jsonnetbox"
	"github.com/errandci/errand/pipeline"
)

// jsonnetFlags are the limits of a Jsonnet evaluation, the same for the
// manager (configs submitted to it), errand run and errand submit
// (configs rendered here).
type jsonnetFlags struct {
	timeout time.Duration
	memory  units.Base2Bytes
}

// addJsonnetFlags adds --jsonnet-timeout and --jsonnet-memory to cmd.
func addJsonnetFlags(cmd *kingpin.CmdClause) *jsonnetFlags {
	f := &jsonnetFlags{}
	cmd.Flag("jsonnet-timeout", "Longest a Jsonnet evaluation may take (wall clock and CPU time) before it is killed.").
		Envar("ERRAND_JSONNET_TIMEOUT").Default(jsonnetbox.DefaultTimeout.String()).DurationVar(&f.timeout)
	cmd.Flag("jsonnet-memory", "Most memory a Jsonnet evaluation may use before it is killed, e.g. 256MiB (at least 64MiB).").
		Envar("ERRAND_JSONNET_MEMORY").Default(units.Base2Bytes(jsonnetbox.DefaultMemory).String()).BytesVar(&f.memory)
	return f
}

// validate reports a limit that cannot work, as a usage error.
func (f *jsonnetFlags) validate() error {
	if f.timeout <= 0 {
		return usageErrorf("--jsonnet-timeout must be positive, not %s", f.timeout)
	}
	if f.memory < jsonnetbox.MinMemory {
		return usageErrorf("--jsonnet-memory must be at least %s, not %s", jsonnetbox.FormatBytes(jsonnetbox.MinMemory), jsonnetbox.FormatBytes(int64(f.memory)))
	}
	return nil
}

// loadOptions returns the options that load a config under these limits.
func (f *jsonnetFlags) loadOptions(ext map[string]string) pipeline.LoadOptions {
	if f == nil {
		return pipeline.LoadOptions{ExtStr: ext}
	}
	return pipeline.LoadOptions{ExtStr: ext, Timeout: f.timeout, Memory: int64(f.memory)}
}
