package pipeline

import (
	"errors"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Lint reads the config at path as Load does and validates it, reporting
// in one pass every problem: those of decoding (an unknown field, a value
// of the wrong type) and those of validation (a missing image, a bad
// dependency) together, each a FieldError with the file, line and column
// where the source has them, sorted by line. A syntax or Jsonnet error,
// which leaves no config to check, is one FieldError at its place. An
// error that is not about the config's content (no such file) is returned
// as it is. The config is returned when there is no problem.
func Lint(path string, opts LoadOptions) (*Config, error) {
	file, data, err := read(path)
	if err != nil {
		return nil, err
	}
	if opts.ImportDir == "" {
		opts.ImportDir = filepath.Dir(file)
	}
	cfg, errs, err := decode(file, data, opts)
	if err != nil {
		return nil, Errors{syntaxProblem(file, err)}
	}
	errs = append(errs, withoutDecoded(cfg.validate(), errs)...)
	if len(errs) == 0 {
		return cfg, nil
	}
	out := errs.err(cfg.src).(Errors)
	for i := range out {
		out[i].File = file
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Line != out[j].Line {
			return out[i].Line < out[j].Line
		}
		return out[i].Column < out[j].Column
	})
	return nil, out
}

// withoutDecoded drops the validation problems of fields that could not
// be decoded: a field of the wrong type is reported once, not again as
// missing.
func withoutDecoded(valid, decoded Errors) Errors {
	var out Errors
	for _, v := range valid {
		dup := false
		for _, d := range decoded {
			if v.Path == d.Path || strings.HasPrefix(v.Path, d.Path+".") || strings.HasPrefix(v.Path, d.Path+"[") {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, v)
		}
	}
	return out
}

var (
	// A Jsonnet error names its place as file:line:col (or
	// file:line:col-col, file:(line:col)-(line:col)).
	jsonnetPlace = regexp.MustCompile(`(\S+\.(?:jsonnet|libsonnet)):\(?(\d+):(\d+)`)
	// A JSON syntax error from Parse: "file:line:col: message".
	jsonPlace = regexp.MustCompile(`^:(\d+):(\d+): (.*)$`)
	// A YAML syntax error: "yaml: line N: message".
	yamlPlace = regexp.MustCompile(`yaml: line (\d+): (.*)$`)
)

// syntaxProblem places an error that left no config: the Jsonnet file and
// line it names, or the line of a JSON or YAML syntax error.
func syntaxProblem(file string, err error) FieldError {
	msg := strings.TrimPrefix(err.Error(), file)
	fe := FieldError{File: file}
	if errors.Is(err, ErrTimeout) {
		fe.Message = strings.TrimPrefix(strings.TrimPrefix(msg, ":"), " ")
		return fe
	}
	first, _, _ := strings.Cut(strings.TrimSpace(msg), "\n")
	switch {
	case jsonnetPlace.MatchString(msg):
		m := jsonnetPlace.FindStringSubmatch(msg)
		fe.File = m[1]
		fe.Line, _ = strconv.Atoi(m[2])
		fe.Column, _ = strconv.Atoi(m[3])
		// "evaluate F: RUNTIME ERROR: boom" or "evaluate F: F:3:17-22 Expected …"
		first = strings.TrimPrefix(first, "evaluate "+file+": ")
		if loc := jsonnetPlace.FindStringIndex(first); loc != nil && loc[0] == 0 {
			first = strings.TrimSpace(strings.TrimLeft(first[loc[1]:], "0123456789-()"))
		}
		fe.Message = first
	case jsonPlace.MatchString(first):
		m := jsonPlace.FindStringSubmatch(first)
		fe.Line, _ = strconv.Atoi(m[1])
		fe.Column, _ = strconv.Atoi(m[2])
		fe.Message = m[3]
	case yamlPlace.MatchString(first):
		m := yamlPlace.FindStringSubmatch(first)
		fe.Line, _ = strconv.Atoi(m[1])
		fe.Message = m[2]
	default:
		fe.Message = strings.TrimSpace(strings.TrimPrefix(first, ":"))
	}
	return fe
}
