package tasks

import "github.com/errandci/errand"

// GitCheckout is the Git source a stage's workspace starts as a
// checkout of, at the run's commit: every stage of a run checks out the
// same one.
type GitCheckout struct {
	errand.GitSource
	// Commit is the full id of the commit to check out.
	Commit string `json:"commit"`
}
