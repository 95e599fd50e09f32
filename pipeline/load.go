package pipeline

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-jsonnet"
	"github.com/google/go-jsonnet/ast"
	"sigs.k8s.io/yaml"
)

// Config file names looked for in a directory, first found wins.
var configNames = []string{"config.jsonnet", "config.json", "config.yml", "config.yaml"}

// Limits of loading.
const (
	// MaxConfigSize bounds a config file and a Jsonnet program's output.
	MaxConfigSize = 4 << 20
	// DefaultJsonnetTimeout bounds a Jsonnet evaluation when LoadOptions
	// does not say.
	DefaultJsonnetTimeout = 10 * time.Second
	// jsonnetMaxStack bounds Jsonnet recursion.
	jsonnetMaxStack = 500
	// maxJsonnetRunning bounds the evaluations running at once, counting
	// those abandoned past their time limit (see evaluateJsonnet).
	maxJsonnetRunning = 4
)

// LoadOptions tune how a config is read.
type LoadOptions struct {
	// ExtStr are the external variables of a Jsonnet program
	// (std.extVar). std.native('extVarOr')(name, default) reads one with a
	// default.
	ExtStr map[string]string
	// Timeout bounds a Jsonnet evaluation; DefaultJsonnetTimeout when 0.
	Timeout time.Duration
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

// jsonnetSlots bounds the Jsonnet evaluations running at once.
var jsonnetSlots = make(chan struct{}, maxJsonnetRunning)

// evaluateJsonnet runs a Jsonnet program and returns its JSON output.
//
// go-jsonnet cannot be interrupted, so the program runs in a goroutine
// and the caller stops waiting for it at the time limit. A program that
// never ends keeps its goroutine, and its slot in jsonnetSlots, for the
// life of the process: the slots bound how much CPU such programs can
// take, and once they are all held further evaluations fail instead of
// piling up.
func evaluateJsonnet(filename string, data []byte, opts LoadOptions) ([]byte, error) {
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultJsonnetTimeout
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case jsonnetSlots <- struct{}{}:
	case <-timer.C:
		return nil, fmt.Errorf("%s: %w: %d evaluations already running", filename, ErrTimeout, maxJsonnetRunning)
	}

	vm := jsonnet.MakeVM()
	vm.MaxStack = jsonnetMaxStack
	vm.SetTraceOut(io.Discard)
	vm.Importer(newImporter(opts.ImportDir))
	for k, v := range opts.ExtStr {
		vm.ExtVar(k, v)
	}
	vm.NativeFunction(extVarOr(opts.ExtStr))
	mainFile := filename
	if opts.ImportDir != "" && !filepath.IsAbs(mainFile) {
		mainFile = filepath.Join(opts.ImportDir, filepath.Base(filename))
	}

	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		defer func() { <-jsonnetSlots }()
		defer func() {
			if r := recover(); r != nil {
				done <- result{err: fmt.Errorf("jsonnet evaluator panicked: %v", r)}
			}
		}()
		out, err := vm.EvaluateSnippet(mainFile, string(data))
		done <- result{out, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, fmt.Errorf("evaluate %s: %w", filename, r.err)
		}
		if len(r.out) > MaxConfigSize {
			return nil, fmt.Errorf("evaluate %s: output is larger than %d bytes", filename, MaxConfigSize)
		}
		return []byte(r.out), nil
	case <-timer.C:
		return nil, fmt.Errorf("evaluate %s: %w (%s): does the program end?", filename, ErrTimeout, timeout)
	}
}

// extVarOr is std.native('extVarOr')(name, default): the external
// variable name, or default when the run does not set it.
func extVarOr(ext map[string]string) *jsonnet.NativeFunction {
	return &jsonnet.NativeFunction{
		Name:   "extVarOr",
		Params: ast.Identifiers{"name", "default"},
		Func: func(args []any) (any, error) {
			name, ok := args[0].(string)
			if !ok {
				return nil, errors.New("extVarOr: name must be a string")
			}
			if v, ok := ext[name]; ok {
				return v, nil
			}
			return args[1], nil
		},
	}
}

// importer reads Jsonnet imports from inside one directory. os.Root keeps
// every open inside it, symbolic links and ".." included.
type importer struct {
	dir   string
	cache map[string]jsonnet.Contents
}

func newImporter(dir string) *importer {
	if dir != "" {
		if abs, err := filepath.Abs(dir); err == nil {
			dir = abs
		}
	}
	return &importer{dir: dir, cache: map[string]jsonnet.Contents{}}
}

// Import implements jsonnet.Importer.
func (im *importer) Import(importedFrom, importedPath string) (jsonnet.Contents, string, error) {
	if im.dir == "" {
		return jsonnet.Contents{}, "", fmt.Errorf("import %q: imports are not allowed in this config", importedPath)
	}
	if filepath.IsAbs(importedPath) {
		return jsonnet.Contents{}, "", fmt.Errorf("import %q: absolute paths are not allowed", importedPath)
	}
	from := filepath.Dir(importedFrom)
	if !filepath.IsAbs(from) {
		from = filepath.Join(im.dir, from)
	}
	foundAt := filepath.Join(from, importedPath)
	if c, ok := im.cache[foundAt]; ok {
		return c, foundAt, nil
	}
	rel, err := filepath.Rel(im.dir, foundAt)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return jsonnet.Contents{}, "", fmt.Errorf("import %q: outside %s", importedPath, im.dir)
	}
	root, err := os.OpenRoot(im.dir)
	if err != nil {
		return jsonnet.Contents{}, "", fmt.Errorf("import %q: %w", importedPath, err)
	}
	defer root.Close()
	f, err := root.Open(rel)
	if err != nil {
		return jsonnet.Contents{}, "", fmt.Errorf("import %q: %w", importedPath, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxConfigSize+1))
	if err != nil {
		return jsonnet.Contents{}, "", fmt.Errorf("import %q: %w", importedPath, err)
	}
	if len(b) > MaxConfigSize {
		return jsonnet.Contents{}, "", fmt.Errorf("import %q: larger than %d bytes", importedPath, MaxConfigSize)
	}
	c := jsonnet.MakeContentsRaw(b)
	im.cache[foundAt] = c
	return c, foundAt, nil
}
