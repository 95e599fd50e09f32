package pipeline

import (
	"fmt"
	"sort"
	"strings"

	"github.com/errandci/errand/internal/jsonnetbox"
)

// ErrTimeout is wrapped by the error of a Jsonnet program that runs past
// its time limit.
var ErrTimeout = jsonnetbox.ErrTimeLimit

// FieldError is one problem of a config: where it is and what is wrong.
type FieldError struct {
	// File is the config file, set by Lint; empty otherwise.
	File string `json:"file,omitempty"`
	// Path names the field, e.g. stages[1].steps[0].image.
	Path string `json:"path"`
	// Line is the line of the field (or of its nearest written parent)
	// in a JSON or YAML source; 0 when unknown.
	Line int `json:"line,omitempty"`
	// Column is the column of the field on its line; 0 when unknown.
	Column  int    `json:"column,omitempty"`
	Message string `json:"message"`
}

// Error implements error: "path (line N): message", or, when File is set,
// "FILE:LINE:COL: path: message" as compilers write it.
func (e FieldError) Error() string {
	path := e.Path
	if path == "" {
		path = "config"
	}
	if e.File != "" {
		loc := e.File
		if e.Line > 0 {
			loc += fmt.Sprintf(":%d:%d", e.Line, max(e.Column, 1))
		}
		if e.Path == "" && e.Line > 0 {
			return loc + ": " + e.Message
		}
		return loc + ": " + path + ": " + e.Message
	}
	if e.Line > 0 {
		return fmt.Sprintf("%s (line %d): %s", path, e.Line, e.Message)
	}
	return path + ": " + e.Message
}

// Errors lists every problem found in a config, in source order.
type Errors []FieldError

// Error implements error: one problem a line.
func (e Errors) Error() string {
	lines := make([]string, len(e))
	for i, fe := range e {
		lines[i] = fe.Error()
	}
	return strings.Join(lines, "\n")
}

func (e *Errors) add(path, msg string) {
	*e = append(*e, FieldError{Path: path, Message: msg})
}

func (e *Errors) addf(path, format string, args ...any) {
	e.add(path, fmt.Sprintf(format, args...))
}

// err returns the list as an error, nil when empty, with lines filled in
// from the source when there is one.
func (e Errors) err(src *source) error {
	if len(e) == 0 {
		return nil
	}
	out := make(Errors, len(e))
	copy(out, e)
	for i := range out {
		if out[i].Line == 0 {
			out[i].Line, out[i].Column = src.pos(out[i].Path)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Line < out[j].Line })
	return out
}
