package main

import (
	"strconv"

	"github.com/alecthomas/kingpin/v2"

	"github.com/errandci/errand"
	"github.com/errandci/errand/pipeline"
)

// sourceFlags are the flags of errand submit that give a run a Git
// source.
type sourceFlags struct {
	url, ref, commit, depth, credentials string
	submodules, lfs                      bool
}

func addSourceFlags(cmd *kingpin.CmdClause) *sourceFlags {
	f := &sourceFlags{}
	cmd.Flag("source-url", "Git repository every stage's workspace starts as a checkout of (https, http, ssh, git or file URL).").
		Envar("ERRAND_SOURCE_URL").StringVar(&f.url)
	cmd.Flag("ref", "With --source-url: branch, tag or ref to check out; the manager resolves it to a commit once (default: the remote's HEAD).").
		Envar("ERRAND_SOURCE_REF").StringVar(&f.ref)
	cmd.Flag("commit", "With --source-url: the full commit id to check out, instead of resolving --ref.").
		Envar("ERRAND_SOURCE_COMMIT").StringVar(&f.commit)
	cmd.Flag("depth", "With --source-url: commits of history to fetch (default 1; 0 for all of it).").
		Envar("ERRAND_SOURCE_DEPTH").StringVar(&f.depth)
	cmd.Flag("submodules", "With --source-url: also check out the submodules, recursively.").
		Envar("ERRAND_SOURCE_SUBMODULES").BoolVar(&f.submodules)
	cmd.Flag("lfs", "With --source-url: also fetch the Git LFS objects.").
		Envar("ERRAND_SOURCE_LFS").BoolVar(&f.lfs)
	cmd.Flag("credentials", "With --source-url: name of the manager's secret holding user:password or a token for an http(s) URL.").
		Envar("ERRAND_SOURCE_CREDENTIALS").StringVar(&f.credentials)
	return f
}

// source returns the run's source and commit, nil when --source-url is
// not given; a source the manager would refuse is a usage error.
func (f *sourceFlags) source() (*errand.Source, string, error) {
	if f.url == "" {
		if f.ref != "" || f.commit != "" || f.depth != "" || f.submodules || f.lfs || f.credentials != "" {
			return nil, "", usageErrorf("--ref, --commit, --depth, --submodules, --lfs and --credentials need --source-url")
		}
		return nil, "", nil
	}
	g := &errand.GitSource{URL: f.url, Ref: f.ref, Submodules: f.submodules, LFS: f.lfs, Credentials: f.credentials}
	if f.depth != "" {
		d, err := strconv.Atoi(f.depth)
		if err != nil {
			return nil, "", usageErrorf("--depth %q: want a number of commits (0 for the whole history)", f.depth)
		}
		g.Depth = &d
	}
	src := &errand.Source{Git: g}
	if err := pipeline.ValidateSource(src, f.commit); err != nil {
		return nil, "", usageErrorf("%v", err)
	}
	return src, f.commit, nil
}

// sourceLabel shows a run's source in errand runs get: its URL and the
// ref asked for.
func sourceLabel(src *errand.Source) string {
	if src == nil || src.Git == nil {
		return ""
	}
	if src.Git.Ref != "" {
		return src.Git.URL + " " + src.Git.Ref
	}
	return src.Git.URL
}
