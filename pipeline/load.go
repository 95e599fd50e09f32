package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/errandci/errand/internal/jsonnetbox"
)

// Config file names looked for in a directory, first found wins.
var configNames = []string{"config.jsonnet", "config.json", "config.yml", "config.yaml"}

// Limits of loading.
const (
	// MaxConfigSize bounds a config file and a Jsonnet program's output.
	MaxConfigSize = 4 << 20
	// DefaultJsonnetTimeout bounds a Jsonnet evaluation when LoadOptions
	// does not say.
	DefaultJsonnetTimeout = jsonnetbox.DefaultTimeout
	// DefaultJsonnetMemory bounds a Jsonnet evaluation's memory when
	// LoadOptions does not say.
	DefaultJsonnetMemory = jsonnetbox.DefaultMemory
	// jsonnetMaxStack bounds Jsonnet recursion (frames).
	jsonnetMaxStack = 500
)

// LoadOptions tune how a config is read.
type LoadOptions struct {
	// ExtStr are the external variables of a Jsonnet program
	// (std.extVar). std.native('extVarOr')(name, default) reads one with a
	// default.
	ExtStr map[string]string
	// Timeout bounds a Jsonnet evaluation; DefaultJsonnetTimeout when 0.
	Timeout time.Duration
	// Memory bounds a Jsonnet evaluation's memory in bytes;
	// DefaultJsonnetMemory when 0. Jsonnet runs in a child process of
	// this program, which must call ServeJsonnet at the start of main.
	Memory int64
	// ImportDir is the directory Jsonnet imports are read from: an import
	// is resolved relative to the importing file and may not leave this
	// directory. Load defaults it to the config's directory; Parse with
	// no ImportDir refuses every import, which is what a config received
	// over the network needs.
	ImportDir string
}

// Load reads the config at path: a directory (config.jsonnet, then
// config.json, then config.yml or config.yaml, first found wins) or a
// file, whose extension says its format. It does not validate the
// config: see Config.Validate.
func Load(path string, opts LoadOptions) (*Config, error) {
	file, data, err := read(path)
	if err != nil {
		return nil, err
	}
	if opts.ImportDir == "" {
		opts.ImportDir = filepath.Dir(file)
	}
	return Parse(file, data, opts)
}

// Find returns the config file that path names: path itself when it is a
// file, else the first of config.jsonnet, config.json, config.yml and
// config.yaml in that directory.
func Find(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("load pipeline: %w", err)
	}
	if !fi.IsDir() {
		return path, nil
	}
	for _, name := range configNames {
		p := filepath.Join(path, name)
		if fi, err := os.Stat(p); err == nil {
			if fi.IsDir() {
				return "", fmt.Errorf("load pipeline: %s is a directory, not a config file", p)
			}
			return p, nil
		}
	}
	switch strings.ToLower(filepath.Ext(path)) {
	case ".jsonnet", ".libsonnet", ".json", ".yml", ".yaml":
		// errand run dir/config.yml, where config.yml is a directory.
		return "", fmt.Errorf("load pipeline: %s is a directory, not a config file", path)
	}
	return "", fmt.Errorf("load pipeline: no %s in %s", strings.Join(configNames, ", "), path)
}

// Render returns the config at path as a manager accepts it: a JSON or
// YAML file as it is, and a Jsonnet program evaluated here, with its
// imports and external variables, into config.json. The manager
// evaluates no imports from its own file system, so a client renders
// Jsonnet before it submits.
func Render(path string, opts LoadOptions) (name string, data []byte, err error) {
	file, data, err := read(path)
	if err != nil {
		return "", nil, err
	}
	switch strings.ToLower(filepath.Ext(file)) {
	case ".jsonnet", ".libsonnet":
		if opts.ImportDir == "" {
			opts.ImportDir = filepath.Dir(file)
		}
		js, err := evaluateJsonnet(file, data, opts)
		if err != nil {
			return "", nil, err
		}
		return "config.json", js, nil
	}
	return filepath.Base(file), data, nil
}

// read finds the config file at path and reads it, bounded by
// MaxConfigSize. The file name returned is absolute.
func read(path string) (string, []byte, error) {
	file, err := Find(path)
	if err != nil {
		return "", nil, err
	}
	if file, err = filepath.Abs(file); err != nil {
		return "", nil, fmt.Errorf("load pipeline: %w", err)
	}
	data, err := readLimited(file)
	if err != nil {
		return "", nil, fmt.Errorf("load pipeline: %w", err)
	}
	return file, data, nil
}

func readLimited(file string) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	if len(data) > MaxConfigSize {
		return nil, fmt.Errorf("%s is larger than %d bytes", file, MaxConfigSize)
	}
	return data, nil
}

// Parse reads a config from data, in the format that filename's extension
// names: .jsonnet or .libsonnet, .json, .yml or .yaml. It does not
// validate the config: see Config.Validate.
func Parse(filename string, data []byte, opts LoadOptions) (*Config, error) {
	cfg, errs, err := decode(filename, data, opts)
	if err != nil {
		return nil, err
	}
	if err := errs.err(cfg.src); err != nil {
		return nil, fmt.Errorf("%s:\n%w", filename, err)
	}
	return cfg, nil
}

// decode reads a config from data as Parse does, returning the problems
// of its fields beside the config decoded as far as it could be. err is a
// problem that leaves no config at all (a syntax error, a Jsonnet error).
func decode(filename string, data []byte, opts LoadOptions) (*Config, Errors, error) {
	if len(data) > MaxConfigSize {
		return nil, nil, fmt.Errorf("%s: config is larger than %d bytes", filename, MaxConfigSize)
	}
	var (
		js  []byte
		src *source
		err error
	)
	switch ext := strings.ToLower(filepath.Ext(filename)); ext {
	case ".jsonnet", ".libsonnet":
		if js, err = evaluateJsonnet(filename, data, opts); err != nil {
			return nil, nil, err
		}
		src = &source{}
	case ".json":
		js = data
		if src, err = locateJSON(data); err != nil {
			return nil, nil, fmt.Errorf("%s:%w", filename, err)
		}
	case ".yml", ".yaml":
		if src, err = locateYAML(data); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", filename, err)
		}
		if js, err = yaml.YAMLToJSONStrict(data); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", filename, err)
		}
	default:
		return nil, nil, fmt.Errorf("%s: unknown config format %q (want .jsonnet, .json, .yml or .yaml)", filename, ext)
	}
	if err := checkJSON(js); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", filename, err)
	}
	cfg := &Config{src: src}
	var errs Errors
	errs = append(errs, src.dups...)
	decodeValue("", js, cfg, &errs)
	return cfg, errs, nil
}

// checkJSON checks that a document is one JSON object, naming the line
// and column of a syntax error.
func checkJSON(js []byte) error {
	dec := json.NewDecoder(bytes.NewReader(js))
	var v any
	if err := dec.Decode(&v); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			line, col := position(js, se.Offset)
			return fmt.Errorf("%d:%d: %w", line, col, err)
		}
		if errors.Is(err, io.EOF) {
			return errors.New("empty config")
		}
		return err
	}
	// More does not see a stray ']' or '}': look at what is left.
	if rest := bytes.TrimLeft(js[dec.InputOffset():], " \t\r\n"); len(rest) > 0 {
		line, col := position(js, int64(len(js)-len(rest)))
		return fmt.Errorf("%d:%d: data after the config object", line, col)
	}
	if _, ok := v.(map[string]any); !ok {
		return fmt.Errorf("want an object with stages, got %s", jsonKind(bytes.TrimSpace(js)))
	}
	return nil
}

// position turns a byte offset into a 1-based line and column.
func position(data []byte, off int64) (line, col int) {
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	line = 1 + bytes.Count(data[:off], []byte("\n"))
	col = int(off) - bytes.LastIndexByte(data[:off], '\n')
	return line, col
}

// ServeJsonnet must be called first thing in the main function of a
// program that loads Jsonnet configs: Jsonnet is evaluated in a child
// process of the program itself, and in that child ServeJsonnet
// evaluates and exits. In any other process it returns at once.
func ServeJsonnet() { jsonnetbox.ServeIfChild() }

// evaluateJsonnet runs a Jsonnet program and returns its JSON output.
// The program runs in a child process bounded in time, memory, stack and
// output (see jsonnetbox), so that no program can crash, starve or
// outlive its limits in this one.
func evaluateJsonnet(filename string, data []byte, opts LoadOptions) ([]byte, error) {
	limits := jsonnetbox.Limits{Timeout: opts.Timeout, Memory: opts.Memory, MaxOutput: MaxConfigSize}
	if limits.Timeout <= 0 {
		limits.Timeout = DefaultJsonnetTimeout
	}
	req := jsonnetbox.Request{Filename: filename, Source: string(data), ExtStr: opts.ExtStr,
		ImportDir: opts.ImportDir, MaxImportSize: MaxConfigSize, MaxStack: jsonnetMaxStack}
	out, err := jsonnetbox.Evaluate(context.Background(), req, limits)
	if err != nil {
		return nil, fmt.Errorf("evaluate %s: %w", filename, err)
	}
	return out, nil
}
