package tasks

import (
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"
)

// When an artifact is kept, after its step (or stage) succeeded, failed,
// or either.
const (
	ArtifactsOnSuccess = "on_success"
	ArtifactsOnFailure = "on_failure"
	ArtifactsAlways    = "always"
)

// Bounds of an artifacts declaration.
const (
	MaxArtifactPatterns = 100
	MaxArtifactPattern  = 1024
	// MaxArtifactsExpiry is the longest expire_in.
	MaxArtifactsExpiry = 10 * 365 * 24 * time.Hour
)

// Artifacts declares the files of a step's (or a stage's) workspace that
// are kept once it ended: the entries matching one of Paths and none of
// Exclude. A pattern is a slash path relative to the workspace whose
// elements may hold path.Match wildcards (*, ?, [...]) and whose element
// ** matches any number of elements; a pattern that matches a directory
// takes everything under it.
type Artifacts struct {
	Paths   []string `json:"paths"`
	Exclude []string `json:"exclude,omitempty"`
	// ExpireIn is how long they are kept, e.g. 30d, 12h, 1w; empty: the
	// manager's default.
	ExpireIn string `json:"expire_in,omitempty"`
	// When is on_success (the default), on_failure or always.
	When string `json:"when,omitempty"`
	// Required fails the step (or stage) when its artifacts cannot be
	// kept (none match, one is too large, the upload fails); otherwise
	// that is reported in its log and its result is unaffected.
	Required bool `json:"required,omitempty"`
}

// Problems returns what is wrong with the declaration, each as the field
// (relative to the declaration: "paths[2]") and a message.
func (a *Artifacts) Problems() [][2]string {
	var out [][2]string
	add := func(field, format string, args ...any) {
		out = append(out, [2]string{field, fmt.Sprintf(format, args...)})
	}
	if len(a.Paths) == 0 {
		add("paths", "at least one path is required")
	}
	for _, list := range []struct {
		name     string
		patterns []string
	}{{"paths", a.Paths}, {"exclude", a.Exclude}} {
		if len(list.patterns) > MaxArtifactPatterns {
			add(list.name, "%d patterns, at most %d", len(list.patterns), MaxArtifactPatterns)
			continue
		}
		for i, p := range list.patterns {
			if err := CheckArtifactPattern(p); err != nil {
				add(fmt.Sprintf("%s[%d]", list.name, i), "%v", err)
			}
		}
	}
	if a.ExpireIn != "" {
		if _, err := ParseExpiry(a.ExpireIn); err != nil {
			add("expire_in", "%v", err)
		}
	}
	switch a.When {
	case "", ArtifactsOnSuccess, ArtifactsOnFailure, ArtifactsAlways:
	default:
		add("when", "%q: want on_success, on_failure or always", a.When)
	}
	return out
}

// CheckArtifactPattern refuses a pattern that could name a path outside
// the workspace (absolute, with a .. element), that is not clean, or
// whose wildcards are malformed.
func CheckArtifactPattern(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("must not be empty")
	case len(p) > MaxArtifactPattern:
		return fmt.Errorf("longer than %d bytes", MaxArtifactPattern)
	case strings.HasPrefix(p, "/"):
		return fmt.Errorf("%q is absolute: it escapes the workspace; write it relative to the workspace", p)
	case strings.ContainsAny(p, "\\\x00"):
		return fmt.Errorf("%q holds a backslash or a NUL", p)
	}
	for _, el := range strings.Split(strings.TrimSuffix(p, "/"), "/") {
		if el == ".." {
			return fmt.Errorf("%q escapes the workspace through ..", p)
		}
	}
	if c := path.Clean(p); c != strings.TrimSuffix(p, "/") || c == "." {
		return fmt.Errorf("%q is not a clean path (write %q)", p, c)
	}
	for _, el := range strings.Split(p, "/") {
		if _, err := path.Match(el, ""); err != nil {
			return fmt.Errorf("%q: malformed pattern %q", p, el)
		}
	}
	return nil
}

// Applies reports whether the artifacts are kept after a step (or
// stage) that failed or succeeded.
func (a *Artifacts) Applies(failed bool) bool {
	switch a.When {
	case ArtifactsAlways:
		return true
	case ArtifactsOnFailure:
		return failed
	default:
		return !failed
	}
}

// Match reports whether the entry at name (a clean slash path relative
// to the workspace) is kept: it, or a directory above it, matches a path
// pattern, and neither it nor a directory above it matches an exclude
// pattern.
func (a *Artifacts) Match(name string) bool {
	return matchAny(a.Paths, name) && !matchAny(a.Exclude, name)
}

func matchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		pe := strings.Split(strings.TrimSuffix(p, "/"), "/")
		for n := name; ; n = path.Dir(n) {
			if matchElements(pe, strings.Split(n, "/")) {
				return true
			}
			if !strings.Contains(n, "/") {
				break
			}
		}
	}
	return false
}

// matchElements matches path elements against pattern elements, **
// standing for any number of elements.
func matchElements(pe, ne []string) bool {
	for len(pe) > 0 {
		if pe[0] == "**" {
			for k := 0; k <= len(ne); k++ {
				if matchElements(pe[1:], ne[k:]) {
					return true
				}
			}
			return false
		}
		if len(ne) == 0 {
			return false
		}
		if ok, _ := path.Match(pe[0], ne[0]); !ok {
			return false
		}
		pe, ne = pe[1:], ne[1:]
	}
	return len(ne) == 0
}

// Prefixes returns the directories (or files) the path patterns can
// match under: each pattern's leading elements up to its first wildcard,
// "." for a pattern that starts with one.
func (a *Artifacts) Prefixes() []string {
	var out []string
	for _, p := range a.Paths {
		out = append(out, LiteralPrefix(p))
	}
	return out
}

// LiteralPrefix is a pattern's leading elements without wildcards.
func LiteralPrefix(p string) string {
	var lit []string
	for _, el := range strings.Split(strings.TrimSuffix(p, "/"), "/") {
		if strings.ContainsAny(el, "*?[") {
			break
		}
		lit = append(lit, el)
	}
	if len(lit) == 0 {
		return "."
	}
	return strings.Join(lit, "/")
}

// ParseExpiry reads an expiry: a number of days (30d), weeks (2w), or a
// Go duration (12h, 90m). It must be positive and at most
// MaxArtifactsExpiry.
func ParseExpiry(s string) (time.Duration, error) {
	var d time.Duration
	var err error
	switch {
	case strings.HasSuffix(s, "d"), strings.HasSuffix(s, "w"):
		n, perr := strconv.Atoi(s[:len(s)-1])
		unit := 24 * time.Hour
		if strings.HasSuffix(s, "w") {
			unit *= 7
		}
		if perr != nil || n <= 0 || n > int(MaxArtifactsExpiry/unit) {
			return 0, fmt.Errorf("%q: want a positive duration of at most %dd, such as 30d, 2w or 12h", s, MaxArtifactsExpiry/(24*time.Hour))
		}
		d = time.Duration(n) * unit
	default:
		d, err = time.ParseDuration(s)
		if err != nil || d <= 0 || d > MaxArtifactsExpiry {
			return 0, fmt.Errorf("%q: want a positive duration of at most %dd, such as 30d, 2w or 12h", s, MaxArtifactsExpiry/(24*time.Hour))
		}
	}
	return d, nil
}

// ArtifactsResult says what became of a step's (or stage's) artifacts,
// in its result.
type ArtifactsResult struct {
	// Files is the number of entries kept, Bytes their size.
	Files int   `json:"files"`
	Bytes int64 `json:"bytes"`
	// Error says why they were not kept.
	Error string `json:"error,omitempty"`
}
