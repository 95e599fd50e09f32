package pipeline

import (
	"github.com/errandci/errand"
	"github.com/errandci/errand/internal/gitsource"
	"github.com/errandci/errand/tasks"
)

// ValidateSource checks a run's or a stored pipeline's source and, when
// it is not empty, the commit a run checks out: every problem at once,
// each with its path (source.git.url, source.git.ref, source.git.depth,
// source.git.credentials, commit), or nil. A nil source is valid: the
// workspaces start as they do without one. File URLs pass: whoever
// fetches the source (a manager resolving a ref, a delegate checking it
// out) refuses them unless it was started with --allow-file-sources.
func ValidateSource(src *errand.Source, commit string) error {
	var errs Errors
	switch {
	case src == nil && commit != "":
		errs.add("commit", "a commit needs a source to check it out from")
	case src == nil:
	case src.Git == nil:
		errs.add("source.git", "required: the source's repository")
	default:
		for _, p := range gitsource.Check(src.Git, commit, true) {
			path := "source.git." + p.Field
			if p.Field == "commit" {
				path = "commit"
			}
			errs.add(path, p.Message)
		}
	}
	return errs.err(nil)
}

// initializeData is the stored data of an initialize task: the stage's
// environment, and the name of the secret its checkout's credentials
// name in place of its value.
type initializeData struct {
	tasks.InitializeData
	SecretNames []string `json:"secret_names,omitempty"`
}

// checkoutOf returns what each stage's initialize checks out, nil for a
// run without a source. The source is valid and has its commit
// (ValidateSource, then Expand's check of opts).
func checkoutOf(opts ExpandOptions) *tasks.GitCheckout {
	if opts.Source == nil || opts.Source.Git == nil {
		return nil
	}
	return &tasks.GitCheckout{GitSource: *opts.Source.Git, Commit: opts.Commit}
}

// checkSource refuses a source Expand cannot plan: an invalid one, one
// without its commit, one whose credentials no secret holds.
func checkSource(opts ExpandOptions) error {
	if err := ValidateSource(opts.Source, opts.Commit); err != nil {
		return err
	}
	if opts.Source == nil {
		return nil
	}
	if opts.Commit == "" {
		return errand.Errorf(errand.CodeInvalid, "commit: required with a source (the manager resolves the ref to it)")
	}
	if name := opts.Source.Git.Credentials; name != "" {
		if _, ok := opts.Secrets[name]; !ok {
			return errand.Errorf(errand.CodeInvalid, "missing secrets: %s (the source's credentials)", name)
		}
	}
	return nil
}

// commitOf is the commit the steps see as ERRAND_COMMIT: the run's
// checkout, "" without a source.
func commitOf(opts ExpandOptions) string {
	if opts.Source == nil {
		return ""
	}
	return opts.Commit
}
