package errand

// Source says what a run's workspaces start as. The zero value (no Git
// source) keeps today's workspace: empty on a delegate, the project in
// errand run.
type Source struct {
	Git *GitSource `json:"git,omitempty"`
}

// GitSource is a Git repository whose commit each stage's workspace
// starts as a checkout of.
type GitSource struct {
	// URL is the repository: an https, http, ssh, git or file URL, or
	// the scp-like user@host:path form of ssh. file URLs are refused
	// by a manager or delegate not started with --allow-file-sources.
	URL string `json:"url"`
	// Ref is the branch, tag or full ref name (refs/...) whose commit
	// the run checks out when it is given no commit; the remote's HEAD
	// when empty.
	Ref string `json:"ref,omitempty"`
	// Depth is the number of commits of history fetched: 1 when unset,
	// 0 for the whole history.
	Depth *int `json:"depth,omitempty"`
	// Submodules also checks out the submodules, recursively, at the
	// same depth.
	Submodules bool `json:"submodules,omitempty"`
	// LFS also fetches the Git LFS objects of the commit; without it
	// LFS files stay pointer files.
	LFS bool `json:"lfs,omitempty"`
	// Credentials names the secret that holds the credential of an
	// http or https URL: "user:password", or a token alone.
	Credentials string `json:"credentials,omitempty"`
}

// DefaultGitDepth is the depth of a Git source that does not say.
const DefaultGitDepth = 1

// FetchDepth is the depth to fetch: DefaultGitDepth when unset, 0 for
// the whole history.
func (g *GitSource) FetchDepth() int {
	if g == nil || g.Depth == nil {
		return DefaultGitDepth
	}
	return *g.Depth
}
