package tasks

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
)

// Bounds of a cache declaration and of the keys it makes.
const (
	// MaxCacheKey bounds a key, a restore prefix and a group name.
	MaxCacheKey = 256
	// MaxCacheKeyParts bounds the parts of a key, MaxCacheRestoreKeys
	// the restore prefixes, MaxCachePaths the paths.
	MaxCacheKeyParts    = 16
	MaxCacheRestoreKeys = 16
	MaxCachePaths       = 100
	// MaxCacheLiteral bounds one literal part.
	MaxCacheLiteral = 128
)

// cacheKeyRe is the charset of keys, prefixes and groups: nothing that
// needs escaping in a URL or an object key, nothing that could name a
// directory above.
var cacheKeyRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// CheckCacheKey refuses a key (or a restore prefix, or a group name)
// that is empty, longer than MaxCacheKey or outside [A-Za-z0-9._-]
// (starting with a letter or a digit).
func CheckCacheKey(k string) error {
	switch {
	case k == "":
		return fmt.Errorf("must not be empty")
	case len(k) > MaxCacheKey:
		return fmt.Errorf("%.32q…: longer than %d bytes", k, MaxCacheKey)
	case !cacheKeyRe.MatchString(k):
		return fmt.Errorf("%q: want letters, digits, '.', '_' and '-', starting with a letter or a digit", k)
	}
	return nil
}

// Cache declares a stage's cache: the entries under Paths are restored
// at the start of the stage from the entry of Key (or, when there is
// none, from the newest entry whose key starts with one of RestoreKeys,
// in order) and saved under Key at its end when it succeeded and no
// entry of Key exists: entries are immutable.
type Cache struct {
	Key         []CacheKeyPart `json:"key"`
	Paths       []string       `json:"paths"`
	RestoreKeys []string       `json:"restore_keys,omitempty"`
	// Group scopes the entries: stages that name the same group share
	// them; empty is the pipeline's own group.
	Group string `json:"group,omitempty"`
}

// CacheKeyPart is one part of a cache key: a literal, the checksum of
// the workspace files matching globs, the value of an environment
// variable of the stage, or the delegate's architecture or operating
// system. Parts are joined with "-".
type CacheKeyPart struct {
	Literal  string
	Checksum []string
	Env      string
	Arch     bool
	OS       bool
}

// UnmarshalJSON reads a part: a string, {checksum: [globs]}, {env: NAME},
// {arch: null} or {os: null} (in YAML `{arch}` and `{os}`).
func (p *CacheKeyPart) UnmarshalJSON(b []byte) error {
	*p = CacheKeyPart{}
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		return json.Unmarshal(b, &p.Literal)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil || m == nil {
		return fmt.Errorf("a key part is a string, {checksum: [globs]}, {env: NAME}, {arch} or {os}")
	}
	if len(m) != 1 {
		return fmt.Errorf("a key part has exactly one of checksum, env, arch, os; not %d fields", len(m))
	}
	for k, v := range m {
		switch k {
		case "checksum":
			if err := json.Unmarshal(v, &p.Checksum); err != nil || len(p.Checksum) == 0 {
				return fmt.Errorf("checksum: want a list of globs")
			}
		case "env":
			if err := json.Unmarshal(v, &p.Env); err != nil || p.Env == "" {
				return fmt.Errorf("env: want the name of a variable")
			}
		case "arch", "os":
			if s := string(bytes.TrimSpace(v)); s != "null" && s != "true" && s != "{}" {
				return fmt.Errorf("%s takes no value: write {%s}", k, k)
			}
			p.Arch, p.OS = k == "arch", k == "os"
		default:
			return fmt.Errorf("unknown key part %q: want checksum, env, arch or os", k)
		}
	}
	return nil
}

// MarshalJSON writes the part as UnmarshalJSON reads it.
func (p CacheKeyPart) MarshalJSON() ([]byte, error) {
	switch {
	case p.Checksum != nil:
		return json.Marshal(map[string][]string{"checksum": p.Checksum})
	case p.Env != "":
		return json.Marshal(map[string]string{"env": p.Env})
	case p.Arch:
		return []byte(`{"arch":null}`), nil
	case p.OS:
		return []byte(`{"os":null}`), nil
	}
	return json.Marshal(p.Literal)
}

var envNameRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Problems returns what is wrong with the declaration, each as the field
// (relative to the declaration: "key[1]") and a message. Paths are
// checked as artifact patterns are: none may leave the workspace.
func (c *Cache) Problems() [][2]string {
	var out [][2]string
	add := func(field, format string, args ...any) {
		out = append(out, [2]string{field, fmt.Sprintf(format, args...)})
	}
	switch {
	case len(c.Key) == 0:
		add("key", "at least one part is required")
	case len(c.Key) > MaxCacheKeyParts:
		add("key", "%d parts, at most %d", len(c.Key), MaxCacheKeyParts)
	default:
		for i, p := range c.Key {
			f := fmt.Sprintf("key[%d]", i)
			switch {
			case p.Checksum != nil:
				if len(p.Checksum) > MaxArtifactPatterns {
					add(f+".checksum", "%d globs, at most %d", len(p.Checksum), MaxArtifactPatterns)
					continue
				}
				for j, g := range p.Checksum {
					if err := CheckArtifactPattern(g); err != nil {
						add(fmt.Sprintf("%s.checksum[%d]", f, j), "%v", err)
					}
				}
			case p.Env != "":
				if len(p.Env) > MaxCacheLiteral || !envNameRe.MatchString(p.Env) {
					add(f+".env", "%.64q is not a variable name", p.Env)
				}
			case p.Arch, p.OS:
			default:
				if len(p.Literal) > MaxCacheLiteral {
					add(f, "longer than %d bytes", MaxCacheLiteral)
				} else if err := CheckCacheKey(p.Literal); err != nil {
					add(f, "%v", err)
				}
			}
		}
	}
	switch {
	case len(c.Paths) == 0:
		add("paths", "at least one path is required")
	case len(c.Paths) > MaxCachePaths:
		add("paths", "%d paths, at most %d", len(c.Paths), MaxCachePaths)
	default:
		for i, p := range c.Paths {
			if err := CheckArtifactPattern(p); err != nil {
				add(fmt.Sprintf("paths[%d]", i), "%v", err)
			}
		}
	}
	if len(c.RestoreKeys) > MaxCacheRestoreKeys {
		add("restore_keys", "%d prefixes, at most %d", len(c.RestoreKeys), MaxCacheRestoreKeys)
	} else {
		for i, k := range c.RestoreKeys {
			if err := CheckCacheKey(k); err != nil {
				add(fmt.Sprintf("restore_keys[%d]", i), "%v", err)
			}
		}
	}
	if c.Group != "" {
		if err := CheckCacheKey(c.Group); err != nil {
			add("group", "%v", err)
		}
	}
	return out
}

// CacheKeyInputs are what a key's parts are computed from on the
// delegate.
type CacheKeyInputs struct {
	// Env is the stage's environment.
	Env map[string]string
	// Checksum returns the checksum (hex) of the workspace files that
	// match globs.
	Checksum func(globs []string) (string, error)
	// OS and Arch are the delegate's (GOOS, GOARCH).
	OS, Arch string
}

// checksumLen is the length of a checksum part: 128 bits of a SHA-256.
const checksumLen = 32

// ResolveKey computes the key of the declaration from in: its parts
// joined with "-". A value that would make the key unsafe (an
// environment variable's characters outside the key charset) is an
// error, as is a key longer than MaxCacheKey.
func (c *Cache) ResolveKey(in CacheKeyInputs) (string, error) {
	parts := make([]string, 0, len(c.Key))
	for i, p := range c.Key {
		var v string
		switch {
		case p.Checksum != nil:
			sum, err := in.Checksum(p.Checksum)
			if err != nil {
				return "", fmt.Errorf("cache key part %d (checksum of %s): %w", i, strings.Join(p.Checksum, ", "), err)
			}
			v = sum[:min(len(sum), checksumLen)]
		case p.Env != "":
			v = in.Env[p.Env]
			if v == "" {
				v = "none"
			}
		case p.Arch:
			v = in.Arch
		case p.OS:
			v = in.OS
		default:
			v = p.Literal
		}
		parts = append(parts, v)
	}
	key := strings.Join(parts, "-")
	if err := CheckCacheKey(key); err != nil {
		return "", fmt.Errorf("cache key: %w", err)
	}
	return key, nil
}
