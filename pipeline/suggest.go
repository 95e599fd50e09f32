package pipeline

import (
	"fmt"
	"os"
	"path/filepath"
)

// Closest returns the name in names nearest to s by edit distance, when it
// is near enough to be a likely misspelling of it, else "".
func Closest(s string, names []string) string {
	best, bestDist := "", -1
	for _, n := range names {
		if n == s {
			return ""
		}
		d := editDistance(s, n)
		if bestDist < 0 || d < bestDist {
			best, bestDist = n, d
		}
	}
	limit := max(1, min(len(s), len(best))/3)
	if bestDist < 0 || bestDist > limit {
		return ""
	}
	return best
}

// suggest is Closest as a message suffix: ` (did you mean "x"?)` or "".
func suggest(s string, names []string) string {
	if best := Closest(s, names); best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	return ""
}

// editDistance is the optimal string alignment distance of a and b, in
// bytes: insertions, deletions, substitutions and transpositions of two
// neighbours ("biuld" is one edit from "build").
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

// Warnings lists what a user should know about the config at path that is
// not an error: the lower-priority config files beside the one that is
// read, which are ignored.
func Warnings(path string) []string {
	fi, err := os.Stat(path)
	if err != nil || !fi.IsDir() {
		return nil
	}
	var used string
	var out []string
	for _, name := range configNames {
		if _, err := os.Stat(filepath.Join(path, name)); err != nil {
			continue
		}
		if used == "" {
			used = name
			continue
		}
		out = append(out, fmt.Sprintf("%s is ignored: %s is read instead (config.jsonnet, config.json, config.yml, config.yaml: the first found wins)", filepath.Join(path, name), used))
	}
	return out
}
