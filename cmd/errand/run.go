package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/http"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/hashicorp/go-envparse"
	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/delegate"
	"github.com/errandci/errand/httphelper"
	"github.com/errandci/errand/manager"
	"github.com/errandci/errand/manager/ost/posix"
	"github.com/errandci/errand/manager/scheduler"
	"github.com/errandci/errand/manager/store"
	"github.com/errandci/errand/manager/store/sqlite"
	"github.com/errandci/errand/pipeline"
	"github.com/errandci/errand/router"
	"github.com/errandci/errand/tasks"
	"github.com/errandci/errand/tasks/docker"
	"github.com/errandci/errand/tasks/exec"
)

func init() { commands = append(commands, addRunCommand) }

// runFlags are the flags of errand run.
type runFlags struct {
	path        string
	jsonnet     *jsonnetFlags
	env         map[string]string
	envFiles    []string
	secrets     []string
	secretFiles []string
	extStr      map[string]string
	approve     bool
	branch      string
	event       string
	dataDir     string
	listen      string
	workdir     string
	bind        bool
	checkout    bool
	stages      []string
	list        bool
	dryRun      bool
	// output flags, passed to the follower
	jsonOut    bool
	noColour   bool
	timestamps bool
}

func addRunCommand(app *kingpin.Application, g *globals) {
	cmd := app.Command("run", "Run a pipeline on this machine with no server: an in-process manager and delegate run it, logs stream to the terminal, the exit code is the result (0 success, 1 failed, 2 config error, 130 interrupted). Host steps run in a copy of the project (the config's directory, or --workdir), or in the project itself with --bind.")
	f := &runFlags{env: map[string]string{}, extStr: map[string]string{}}
	cmd.Arg("path", "A directory holding config.jsonnet, config.json or config.yml, or a config file.").Default(".").StringVar(&f.path)
	cmd.Flag("env", "Environment variable K=V given to every step (repeatable).").Envar("ERRAND_ENV").StringMapVar(&f.env)
	cmd.Flag("env-file", "Read environment variables given to every step from this dotenv file (repeatable; --env wins).").Envar("ERRAND_ENV_FILE").StringsVar(&f.envFiles)
	cmd.Flag("secret", "Secret NAME=VALUE, or NAME to take the value from this environment (repeatable). Values are never printed. Secrets the pipeline names and no flag gives are taken from this environment when set.").Envar("ERRAND_SECRET").StringsVar(&f.secrets)
	cmd.Flag("secret-file", "Read secrets from this dotenv file (repeatable; --secret wins).").Envar("ERRAND_SECRET_FILE").StringsVar(&f.secretFiles)
	cmd.Flag("ext-str", "Jsonnet external variable K=V (repeatable).").Envar("ERRAND_EXT_STR").StringMapVar(&f.extStr)
	f.jsonnet = addJsonnetFlags(cmd)
	cmd.Flag("approve", "Grant the approvals stages wait for.").Envar("ERRAND_APPROVE").BoolVar(&f.approve)
	cmd.Flag("branch", "Branch of the run, matched against the stages' when.").Envar("ERRAND_BRANCH").StringVar(&f.branch)
	cmd.Flag("event", "Event of the run, matched against the stages' when.").Envar("ERRAND_EVENT").StringVar(&f.event)
	cmd.Flag("data-dir", "Keep the run's database and logs here (default: a temporary directory, removed at the end).").Envar("ERRAND_RUN_DATA_DIR").StringVar(&f.dataDir)
	cmd.Flag("listen", "Also serve the manager's API on this address while the run lasts, e.g. 127.0.0.1:7700.").Envar("ERRAND_RUN_LISTEN").StringVar(&f.listen)
	cmd.Flag("workdir", "The project directory the workspace starts as (default: the directory holding the config).").Envar("ERRAND_WORKDIR").StringVar(&f.workdir)
	cmd.Flag("bind", "Run host steps in the project directory itself instead of a copy: steps change its files.").Envar("ERRAND_RUN_BIND").BoolVar(&f.bind)
	cmd.Flag("checkout", "Start the workspace as the committed HEAD of the project's Git work tree (git archive, submodules included) instead of the work tree: uncommitted changes and untracked files are left out.").Envar("ERRAND_RUN_CHECKOUT").BoolVar(&f.checkout)
	cmd.Flag("stage", "Run only this stage and the stages it depends on (repeatable).").Envar("ERRAND_RUN_STAGE").StringsVar(&f.stages)
	cmd.Flag("list", "List the stages and steps with their dependencies; run nothing.").Envar("ERRAND_RUN_LIST").BoolVar(&f.list)
	cmd.Flag("dry-run", "Print the graph of tasks the run would submit; run nothing.").Envar("ERRAND_RUN_DRY_RUN").BoolVar(&f.dryRun)
	addOutputFlags(cmd, &f.noColour, &f.timestamps)
	cmd.Flag("json", "Print one JSON event per line (step_started, log, step_ended, setup_ended, cleanup_ended, message, run_ended) instead of text.").Envar("ERRAND_JSON").BoolVar(&f.jsonOut)
	cmd.Action(func(*kingpin.ParseContext) error {
		if err := f.jsonnet.validate(); err != nil {
			return err
		}
		code, err := runLocal(g.Ctx, f, g.Stdout, g.Stderr)
		if err != nil {
			var ee *exitError
			if errors.As(err, &ee) {
				return err
			}
			return &exitError{code: max(code, exitFailed), err: err}
		}
		return exitFor(code)
	})
}

// exitFor returns the error that ends the process with a run's exit code.
func exitFor(code int) error {
	switch code {
	case exitOK:
		return nil
	case exitConfigError:
		return &exitError{code: code, err: errors.New("the config has errors: nothing was run")}
	case exitRunInterrupted:
		return &exitError{code: code, err: errors.New("interrupted: the run was cancelled")}
	}
	return &exitError{code: code, err: errors.New("the run did not succeed")}
}

// localConfig loads and checks a config the way errand run needs it: the
// source to submit, its file name, and every problem with its path.
func localConfig(path string, opts pipeline.LoadOptions) (src []byte, name string, cfg *pipeline.Config, err error) {
	if cfg, err = pipeline.Lint(path, opts); err != nil {
		return nil, "", nil, err
	}
	name, src, err = pipeline.Render(path, opts)
	if err != nil {
		return nil, "", nil, err
	}
	return src, name, cfg, nil
}

// localRun is what errand run checked before it starts anything.
type localRun struct {
	src     []byte
	name    string
	cfg     *pipeline.Config
	project string
	env     map[string]string
	secrets map[string]string
}

// prepareRun reads and checks what a run needs: the config, the project
// directory, the environment and the secrets. It creates nothing, so that
// bad input leaves nothing behind.
func prepareRun(f *runFlags, stderr io.Writer) (*localRun, int, error) {
	if _, err := os.Stat(f.path); err != nil {
		return nil, exitUsage, usageErrorf("%s: %v", f.path, pathProblem(err))
	}
	for _, w := range pipeline.Warnings(f.path) {
		fmt.Fprintf(stderr, "errand: warning: %s\n", w)
	}
	src, name, cfg, err := localConfig(f.path, f.jsonnet.loadOptions(f.extStr))
	if err != nil {
		fmt.Fprintf(stderr, "errand: the config has errors:\n%s\n", indent(configReport(err)))
		return nil, exitConfigError, nil
	}
	lr := &localRun{src: src, name: name, cfg: cfg}
	if lr.project, err = projectDir(f.path, f.workdir); err != nil {
		return nil, exitUsage, err
	}
	if f.checkout && f.bind {
		return nil, exitUsage, usageErrorf("--checkout and --bind: the steps run either in a checkout of HEAD or in the project itself")
	}
	if len(f.stages) > 0 {
		if lr.cfg, err = selectStages(cfg, f.stages); err != nil {
			return nil, exitUsage, err
		}
		if lr.src, err = json.Marshal(lr.cfg); err != nil {
			return nil, exitFailed, fmt.Errorf("encode the selected stages: %w", err)
		}
		lr.name = "config.json"
	}
	if lr.env, err = readDotenvs("--env-file", f.envFiles); err != nil {
		return nil, exitUsage, err
	}
	maps.Copy(lr.env, f.env)
	if lr.secrets, err = runSecrets(f, lr.cfg); err != nil {
		return nil, exitUsage, err
	}
	return lr, exitOK, nil
}

// runSecrets gathers the secret values: --secret-file, then --secret,
// then, for a secret the pipeline names and neither gives, this
// environment (as --secret NAME would take it).
func runSecrets(f *runFlags, cfg *pipeline.Config) (map[string]string, error) {
	secrets, err := readDotenvs("--secret-file", f.secretFiles)
	if err != nil {
		return nil, err
	}
	given, err := secretValues(f.secrets)
	if err != nil {
		return nil, err
	}
	maps.Copy(secrets, given)
	for _, s := range cfg.Stages {
		for _, name := range s.Secrets {
			if _, ok := secrets[name]; !ok {
				if v, ok := os.LookupEnv(name); ok {
					secrets[name] = v
				}
			}
		}
	}
	return secrets, nil
}

// expand expands the run as the manager will, so that what it would
// refuse (a secret that nothing gives) is found before anything starts.
func (lr *localRun) expand(f *runFlags, newID func() string) (*pipeline.Plan, error) {
	plan, err := pipeline.Expand(lr.cfg, lr.expandOptions(f, newID))
	if err != nil {
		var e *errand.Error
		if errors.As(err, &e) && strings.HasPrefix(e.Reason, "missing secrets") {
			return nil, usageErrorf("%s: give them with --secret NAME=VALUE, --secret-file FILE or this environment", e.Reason)
		}
		return nil, usageErrorf("%v", err)
	}
	return plan, nil
}

// expandOptions are the options the run is expanded with; newID names
// the tasks (ULIDs when nil).
func (lr *localRun) expandOptions(f *runFlags, newID func() string) pipeline.ExpandOptions {
	return pipeline.ExpandOptions{RunID: "local", Branch: f.branch, Event: f.event, Secrets: lr.secrets, Env: lr.env, NewID: newID}
}

// pathProblem says briefly why a path cannot be used.
func pathProblem(err error) string {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "no such file or directory"
	case errors.Is(err, fs.ErrPermission):
		return "permission denied"
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// projectDir is the directory a run's workspace starts as: workdir, or
// the directory holding the config.
func projectDir(path, workdir string) (string, error) {
	dir := workdir
	if dir == "" {
		file, err := pipeline.Find(path)
		if err != nil {
			return "", usageErrorf("%v", err)
		}
		dir = filepath.Dir(file)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", usageErrorf("--workdir %s: %v", dir, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", usageErrorf("--workdir %s: %s", dir, pathProblem(err))
	}
	if !fi.IsDir() {
		return "", usageErrorf("--workdir %s: not a directory", dir)
	}
	return abs, nil
}

// maxDotenvSize bounds an env or secret file.
const maxDotenvSize = 1 << 20

// readDotenvs reads dotenv files in order, later files winning; flag
// names the flag in messages.
func readDotenvs(flag string, files []string) (map[string]string, error) {
	out := map[string]string{}
	for _, file := range files {
		fh, err := os.Open(file)
		if err != nil {
			return nil, usageErrorf("%s %s: %s", flag, file, pathProblem(err))
		}
		fi, err := fh.Stat()
		if err == nil && fi.IsDir() {
			err = errors.New("is a directory")
		} else if err == nil && fi.Size() > maxDotenvSize {
			err = fmt.Errorf("larger than %d bytes", maxDotenvSize)
		}
		var vars map[string]string
		if err == nil {
			vars, err = envparse.Parse(io.LimitReader(fh, maxDotenvSize))
		}
		fh.Close()
		if err != nil {
			var pe *envparse.ParseError
			if errors.As(err, &pe) && pe.Line > 0 {
				return nil, usageErrorf("%s %s:%d: %v", flag, file, pe.Line, pe.Err)
			}
			return nil, usageErrorf("%s %s: %v", flag, file, err)
		}
		maps.Copy(out, vars)
	}
	return out, nil
}

// selectStages keeps the named stages and, transitively, those they
// depend on, in the config's order.
func selectStages(cfg *pipeline.Config, names []string) (*pipeline.Config, error) {
	byName := map[string]*pipeline.Stage{}
	all := make([]string, 0, len(cfg.Stages))
	for _, s := range cfg.Stages {
		byName[s.Name] = s
		all = append(all, s.Name)
	}
	keep := map[string]bool{}
	var visit func(string)
	visit = func(n string) {
		if keep[n] {
			return
		}
		keep[n] = true
		for _, d := range byName[n].Depends {
			if _, ok := byName[d.Stage]; ok {
				visit(d.Stage)
			}
		}
	}
	for _, n := range names {
		if _, ok := byName[n]; !ok {
			return nil, usageErrorf("--stage %s: no such stage%s (stages: %s)", n, didYouMean(n, all), strings.Join(all, ", "))
		}
		visit(n)
	}
	out := &pipeline.Config{}
	for _, s := range cfg.Stages {
		if keep[s.Name] {
			out.Stages = append(out.Stages, s)
		}
	}
	return out, nil
}

// runLocal runs a pipeline with an in-process manager and delegate and
// returns the exit code.
func runLocal(ctx context.Context, f *runFlags, stdout, stderr io.Writer) (int, error) {
	lr, code, err := prepareRun(f, stderr)
	if lr == nil {
		return code, err
	}
	if f.list {
		return exitOK, printStages(stdout, lr.cfg)
	}
	if f.dryRun {
		return printTaskGraph(stdout, lr, f)
	}
	if _, err := lr.expand(f, nil); err != nil {
		return exitUsage, err
	}
	dir := f.dataDir
	temp := dir == ""
	if temp {
		if dir, err = os.MkdirTemp("", "errand-run-"); err != nil {
			return exitFailed, fmt.Errorf("data dir: %w", err)
		}
		defer os.RemoveAll(dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return exitFailed, fmt.Errorf("data dir: %w", err)
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return exitFailed, fmt.Errorf("data dir: %w", err)
	}

	if f.checkout {
		co, err := checkoutHead(ctx, lr.project, filepath.Join(dir, "checkout"))
		if err != nil {
			return exitUsage, err
		}
		defer os.RemoveAll(co.Dir)
		lr.project = co.Project
		lr.env["ERRAND_COMMIT"] = co.Commit
		fmt.Fprintf(stderr, "errand: the workspace is commit %s of %s (--checkout)\n", co.Commit, co.Top)
	}

	log := logrus.New()
	log.SetOutput(stderr)
	log.SetLevel(logrus.WarnLevel)
	exh := exec.New(filepath.Join(dir, "delegate"))
	exh.Source, exh.Bind, exh.Exclude = lr.project, f.bind, []string{dir}
	if f.checkout {
		exh.Exclude = nil // the checkout is in the data dir
	}
	// A first signal cancels the run, which then runs its cleanups; a
	// second one ends the process at once.
	ctx, stopSignals := cancelOnSignals(ctx, func() {
		log.SetOutput(io.Discard)
		exh.Kill()
		if temp {
			// The killed steps' logs are still being sealed into the
			// dir for a moment; remove it again once they are.
			_ = os.RemoveAll(dir)
			time.Sleep(killSettle)
			_ = os.RemoveAll(dir)
		}
		fmt.Fprintln(stderr, "errand: killed: cleanups did not run")
		os.Exit(exitRunInterrupted)
	})
	defer stopSignals()

	// The manager and the delegate live until the run ended and its
	// cleanups ran, whatever signal ended ctx.
	life, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()

	st, err := sqlite.Open(life, filepath.Join(dir, "errand.db"))
	if err != nil {
		return exitFailed, err
	}
	// Closed after the manager stopped (deferred calls run last first).
	defer st.Close()
	objects, err := posix.New(filepath.Join(dir, "objects"))
	if err != nil {
		return exitFailed, err
	}
	defer objects.Close()
	mcfg := manager.Config{
		Listen: f.listen, AdminToken: randomToken(), RegistrationToken: randomToken(), Log: log,
		HeartbeatInterval: time.Second, SweepInterval: 500 * time.Millisecond,
		Secrets: scheduler.SecretMap(lr.secrets),
	}
	srv, err := manager.New(mcfg, st, objects)
	if err != nil {
		return exitFailed, err
	}
	served := make(chan error, 1)
	if f.listen != "" {
		go func() { served <- srv.ListenAndServe(life) }()
	} else if err := srv.Start(life); err != nil {
		return exitFailed, err
	}
	defer func() {
		stop()
		if f.listen != "" {
			<-served
			return
		}
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Stop(sctx)
	}()

	base := "http://errand.invalid"
	admin := client.New(base, srv.AdminToken(), client.WithHandler(srv.Handler()), client.WithLogger(logrus.NewEntry(log)))
	reg := admin.WithToken(srv.RegistrationToken())
	done, err := startLocalDelegate(life, dir, reg, log, exh, usesDocker(lr.cfg))
	if err != nil {
		return exitFailed, err
	}
	defer func() {
		stop()
		<-done
	}()

	// The run is made by whoever runs errand on this machine.
	asLocal := manager.WithUserPrincipal(life, localUser(), store.RoleAdmin)
	run, err := admin.CreateRun(asLocal, &client.RunRequest{Config: string(lr.src), Filename: lr.name,
		Branch: f.branch, Event: f.event, ExtStr: f.extStr, Env: lr.env})
	if err != nil {
		return exitFailed, err
	}
	if f.listen != "" {
		if a := srv.Addr(); a != nil {
			fmt.Fprintf(stderr, "errand: manager API on http://%s (admin token in this process only)\n", a)
		}
	}
	return followRun(ctx, admin, run.ID, stdout, followOptions{approve: f.approve, failOnWait: !f.approve, failOnUnserved: true,
		colour: useColour(stdout, f.noColour) && !f.jsonOut, timestamps: f.timestamps, json: f.jsonOut, cancelOnInterrupt: true})
}

// localUser names who runs errand run, as the run's creator: the OS
// user, or "local" when it has no name.
func localUser() string {
	name := ""
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	if name == "" {
		name = os.Getenv("USER")
	}
	if name == "" || len(name) > store.MaxRunCreatedBy {
		return "local"
	}
	return name
}

// killSettle is how long a killed run's own writes may go on before its
// temporary dir is removed for good.
const killSettle = 300 * time.Millisecond

// cancelOnSignals returns a context that SIGINT, SIGTERM, SIGHUP and
// SIGPIPE cancel (a closed terminal or pipe stops the run as Ctrl-C
// does); a second SIGINT, SIGTERM or SIGHUP calls kill. stop ends the
// watch.
func cancelOnSignals(parent context.Context, kill func()) (context.Context, func()) {
	ctx, cancel := context.WithCancel(parent)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGPIPE)
	quit := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		cancelled := false
		for {
			select {
			case <-quit:
				return
			case sig := <-sigs:
				if cancelled && sig != syscall.SIGPIPE {
					kill()
					return
				}
				cancelled = true
				cancel()
			}
		}
	}()
	return ctx, func() {
		// The last words go to what may be a closed pipe: a write
		// there must fail, not end the process with SIGPIPE. A channel
		// nobody reads keeps SIGPIPE caught; signal.Ignore would leave it
		// ignored in every process started afterwards.
		signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
		signal.Stop(sigs)
		close(quit)
		<-finished
		cancel()
	}
}

// startLocalDelegate runs an in-process delegate with the host runtime,
// and the docker runtime when the config needs it, until ctx ends. done
// is closed once it stopped.
func startLocalDelegate(ctx context.Context, dir string, reg *client.HTTP, log *logrus.Logger, exh *exec.Handlers, wantDocker bool) (<-chan struct{}, error) {
	r := router.New(router.WithLogger(log))
	// The handlers move artifacts through the delegate once it exists.
	var self *delegate.Delegate
	exh.Artifacts = artifactsVia(&self)
	exh.Register(r)
	var dh *docker.Handlers
	if wantDocker {
		// Docker stages fail at once when no daemon answers: the
		// runtime's initialize says so, or, when the runtime cannot even
		// be made, handlers that only say so.
		var err error
		if dh, err = docker.New(docker.Config{Log: log, Local: true, Source: exh.Source, Bind: exh.Bind, Exclude: exh.Exclude, Artifacts: exh.Artifacts}); err != nil {
			dockerUnavailable(r, err)
		} else {
			dh.Register(r)
		}
	}
	d, err := delegate.New(delegate.Config{
		Name: "errand-run", Capacity: max(2, runtime.NumCPU()), StateDir: filepath.Join(dir, "delegate"),
		Client:       reg,
		DrainTimeout: time.Minute, Log: log,
	}, r)
	if err != nil {
		return nil, err
	}
	self = d
	done := make(chan struct{})
	go func() {
		defer close(done)
		if dh != nil {
			defer dh.Close()
		}
		if err := d.Run(ctx); err != nil {
			log.WithError(err).Warn("delegate stopped")
		}
	}()
	// The run is submitted once the delegate is registered: until then a
	// queued task would have nobody to explain why it waits.
	select {
	case <-d.Ready():
	case <-done:
	case <-ctx.Done():
	}
	return done, nil
}

// dockerUnavailable registers docker handlers that fail with
// docker_unavailable: the stage fails at once with the reason instead of
// waiting for a runtime nobody serves. Cleanup has nothing to remove.
func dockerUnavailable(r *router.Router, cause error) {
	fail := func(w http.ResponseWriter, _ *http.Request) {
		httphelper.WriteError(w, errand.Errorf(docker.CodeDockerUnavailable,
			"the Docker runtime cannot start: %v (is dockerd running? DOCKER_HOST names the daemon)", cause))
	}
	r.HandleFunc(errand.TypeDockerInitialize, fail)
	r.HandleFunc(errand.TypeDockerExecute, fail)
	r.HandleFunc(errand.TypeDockerCleanup, func(w http.ResponseWriter, _ *http.Request) {
		httphelper.WriteJSON(w, tasks.CleanupResult{}, http.StatusOK)
	})
}

func usesDocker(cfg *pipeline.Config) bool {
	for _, s := range cfg.Stages {
		if s.Runtime.Type == pipeline.RuntimeDocker {
			return true
		}
	}
	return false
}

// secretValues reads --secret NAME=VALUE or NAME (from the environment).
func secretValues(specs []string) (map[string]string, error) {
	out := map[string]string{}
	for _, s := range specs {
		name, value, ok := strings.Cut(s, "=")
		if !ok {
			if value, ok = os.LookupEnv(name); !ok {
				return nil, usageErrorf("--secret %s: not set in the environment (or pass %s=VALUE)", name, name)
			}
		}
		if name == "" {
			return nil, usageErrorf("--secret: a name is required")
		}
		out[name] = value
	}
	return out, nil
}

func randomToken() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n  ")
}

// printStages writes the --list table: each stage with its runtime, what
// it depends on and its steps.
func printStages(w io.Writer, cfg *pipeline.Config) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STAGE\tRUNTIME\tDEPENDS ON\tSTEPS")
	for _, s := range cfg.Stages {
		rt := s.Runtime.Type
		if rt == "" {
			rt = pipeline.RuntimeHost
		}
		if s.Runtime.Image != "" {
			rt += " " + s.Runtime.Image
		}
		var deps, steps []string
		for _, d := range s.Depends {
			deps = append(deps, dependLabel(d.Stage, d.Conditions))
		}
		for _, st := range s.Steps {
			steps = append(steps, st.Name)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Name, rt, orDash(strings.Join(deps, ", ")), orDash(strings.Join(steps, ", ")))
	}
	return tw.Flush()
}

// dependLabel names a dependency, with its conditions unless it is the
// plain on_success.
func dependLabel(name string, conds []errand.Condition) string {
	if len(conds) == 0 || len(conds) == 1 && conds[0] == errand.OnSuccess {
		return name
	}
	cs := make([]string, len(conds))
	for i, c := range conds {
		cs[i] = string(c)
	}
	return name + " (" + strings.Join(cs, "|") + ")"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// printTaskGraph writes the --dry-run table: the tasks the run would
// submit, named stage/step, with their types and dependencies.
func printTaskGraph(w io.Writer, lr *localRun, f *runFlags) (int, error) {
	n := 0
	plan, err := lr.expand(f, func() string { n++; return fmt.Sprintf("t%d", n) })
	if err != nil {
		return exitUsage, err
	}
	names := map[string]string{}
	for _, ps := range plan.Stages {
		if ps.Skipped {
			continue
		}
		names[ps.InitializeID] = ps.Name + "/initialize"
		for _, st := range ps.Steps {
			names[st.TaskID] = ps.Name + "/" + st.Name
		}
		names[ps.CleanupID] = ps.Name + "/cleanup"
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TASK\tTYPE\tDEPENDS ON")
	for _, t := range plan.Tasks {
		deps := make([]string, 0, len(t.DependsOn))
		for _, d := range t.DependsOn {
			deps = append(deps, dependLabel(names[d.Task], []errand.Condition{d.Condition}))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", names[t.ID], t.Type, orDash(strings.Join(deps, ", ")))
	}
	for _, ps := range plan.Stages {
		if ps.Skipped {
			fmt.Fprintf(tw, "%s\tskipped\t-\n", ps.Name)
		}
	}
	if err := tw.Flush(); err != nil {
		return exitFailed, err
	}
	return exitOK, nil
}
