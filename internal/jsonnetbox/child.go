package jsonnetbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"

	"github.com/google/go-jsonnet"
	"github.com/google/go-jsonnet/ast"
)

// childEnv is the environment variable that makes this program the
// evaluator child; its value is the childSpec.
const childEnv = "ERRAND_JSONNET_CHILD"

// Exit codes of the child; the Go runtime ends with 2 on a fatal error.
const (
	exitEvalError = 3 // the program failed: a childErr on stderr
	exitBadSpec   = 4 // the child was started wrong
)

// Kinds of childErr.
const (
	kindEval   = "eval"
	kindOutput = "output"
)

// Defaults of Request.
const (
	defaultMaxStack      = 500
	defaultMaxImportSize = 4 << 20
)

// childErr is what the child writes on standard error when the program
// fails.
type childErr struct {
	Kind    string `json:"kind"`
	Message string `json:"message"`
}

// childSpec are the limits the child sets itself, passed in childEnv.
type childSpec struct {
	Memory     int64
	CPUSeconds uint64
	MaxOutput  int64
}

// String encodes the spec as childEnv's value.
func (s childSpec) String() string {
	return fmt.Sprintf("memory=%d,cpu=%d,output=%d", s.Memory, s.CPUSeconds, s.MaxOutput)
}

// parseSpec decodes childEnv's value.
func parseSpec(v string) (childSpec, error) {
	var s childSpec
	for _, kv := range strings.Split(v, ",") {
		k, val, _ := strings.Cut(kv, "=")
		n, err := strconv.ParseUint(val, 10, 63)
		if err != nil || n == 0 {
			return s, fmt.Errorf("bad %s %q", childEnv, v)
		}
		switch k {
		case "memory":
			s.Memory = int64(n)
		case "cpu":
			s.CPUSeconds = n
		case "output":
			s.MaxOutput = int64(n)
		default:
			return s, fmt.Errorf("bad %s %q", childEnv, v)
		}
	}
	if s.Memory == 0 || s.CPUSeconds == 0 || s.MaxOutput == 0 {
		return s, fmt.Errorf("bad %s %q", childEnv, v)
	}
	return s, nil
}

// ServeIfChild must be called first thing in main (and in TestMain of a
// test binary that evaluates Jsonnet): when this process was started as
// the evaluator child it evaluates the program on standard input and
// exits; otherwise it returns, and records that this program can be its
// own child.
func ServeIfChild() {
	v, ok := os.LookupEnv(childEnv)
	if !ok {
		mu.Lock()
		served = true
		mu.Unlock()
		return
	}
	os.Exit(serveChild(v, os.Stdin, os.Stdout, os.Stderr))
}

// serveChild limits this process, then evaluates the request read from
// in, writing the JSON on out or a childErr on errOut.
func serveChild(spec string, in io.Reader, out, errOut io.Writer) int {
	s, err := parseSpec(spec)
	if err == nil {
		err = limitSelf(s)
	}
	if err != nil {
		fmt.Fprintf(errOut, "jsonnet evaluator: %v\n", err)
		return exitBadSpec
	}
	fail := func(kind, msg string) int {
		b, _ := json.Marshal(childErr{Kind: kind, Message: msg})
		fmt.Fprintf(errOut, "%s\n", b)
		return exitEvalError
	}
	body, err := io.ReadAll(io.LimitReader(in, maxRequest+1))
	if err != nil || len(body) > maxRequest {
		return fail(kindEval, "read the Jsonnet request: too large or unreadable")
	}
	var req Request
	if err := json.Unmarshal(body, &req); err != nil {
		return fail(kindEval, fmt.Sprintf("decode the Jsonnet request: %v", err))
	}
	body = nil
	js, err := evaluate(req)
	if err != nil {
		return fail(kindEval, err.Error())
	}
	if int64(len(js)) > s.MaxOutput {
		return fail(kindOutput, "output too large")
	}
	if _, err := io.WriteString(out, js); err != nil {
		return fail(kindEval, fmt.Sprintf("write the output: %v", err))
	}
	return 0
}

// limitSelf sets this process's limits: data segment (the Go heap and
// goroutine stacks are private writable mappings, which RLIMIT_DATA
// counts; the limit is the memory limit on top of what the runtime and
// the program's initialisation already hold), CPU time (SIGKILL at the limit: soft and hard are equal),
// a soft Go memory limit that makes the collector work harder before the
// hard one, and a goroutine stack bound well inside the memory limit so
// that deep recursion reports a stack overflow.
func limitSelf(s childSpec) error {
	if err := syscall.Setrlimit(syscall.RLIMIT_CPU, &syscall.Rlimit{Cur: s.CPUSeconds, Max: s.CPUSeconds}); err != nil {
		return fmt.Errorf("limit CPU time: %w", err)
	}
	base, err := dataSize()
	if err != nil {
		return fmt.Errorf("limit memory: %w", err)
	}
	data := uint64(base + s.Memory*memoryFactor)
	if err := syscall.Setrlimit(syscall.RLIMIT_DATA, &syscall.Rlimit{Cur: data, Max: data}); err != nil {
		return fmt.Errorf("limit memory: %w", err)
	}
	debug.SetMemoryLimit(s.Memory * 3 / 4)
	debug.SetMaxStack(int(min(s.Memory/4, 64<<20)))
	return nil
}

// dataSize returns the size of this process's data segment (VmData).
func dataSize() (int64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmData:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("VmData %q: %w", v, err)
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("no VmData in /proc/self/status")
}

// evaluate runs the program of req with go-jsonnet.
func evaluate(req Request) (out string, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("jsonnet evaluator panicked: %v", r)
		}
	}()
	vm := jsonnet.MakeVM()
	vm.MaxStack = req.MaxStack
	if vm.MaxStack <= 0 {
		vm.MaxStack = defaultMaxStack
	}
	vm.SetTraceOut(io.Discard)
	maxImport := req.MaxImportSize
	if maxImport <= 0 {
		maxImport = defaultMaxImportSize
	}
	vm.Importer(newImporter(req.ImportDir, maxImport))
	for k, v := range req.ExtStr {
		vm.ExtVar(k, v)
	}
	vm.NativeFunction(extVarOr(req.ExtStr))
	mainFile := req.Filename
	if req.ImportDir != "" && !filepath.IsAbs(mainFile) {
		mainFile = filepath.Join(req.ImportDir, filepath.Base(req.Filename))
	}
	return vm.EvaluateSnippet(mainFile, req.Source)
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
	max   int64
	cache map[string]jsonnet.Contents
}

func newImporter(dir string, max int64) *importer {
	if dir != "" {
		if abs, err := filepath.Abs(dir); err == nil {
			dir = abs
		}
	}
	return &importer{dir: dir, max: max, cache: map[string]jsonnet.Contents{}}
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
	b, err := io.ReadAll(io.LimitReader(f, im.max+1))
	if err != nil {
		return jsonnet.Contents{}, "", fmt.Errorf("import %q: %w", importedPath, err)
	}
	if int64(len(b)) > im.max {
		return jsonnet.Contents{}, "", fmt.Errorf("import %q: larger than %d bytes", importedPath, im.max)
	}
	c := jsonnet.MakeContentsRaw(b)
	im.cache[foundAt] = c
	return c, foundAt, nil
}
