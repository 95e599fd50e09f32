package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/sirupsen/logrus"

	"github.com/errandci/errand/client"
	"github.com/errandci/errand/delegate"
	"github.com/errandci/errand/manager"
	"github.com/errandci/errand/manager/ost/posix"
	"github.com/errandci/errand/manager/store/sqlite"
	"github.com/errandci/errand/pipeline"
	"github.com/errandci/errand/router"
	"github.com/errandci/errand/tasks/docker"
	"github.com/errandci/errand/tasks/exec"
)

func init() { commands = append(commands, addRunCommand) }

// runFlags are the flags of errand run.
type runFlags struct {
	path    string
	env     map[string]string
	secrets []string
	extStr  map[string]string
	approve bool
	branch  string
	event   string
	dataDir string
	listen  string
}

func addRunCommand(app *kingpin.Application, g *globals) {
	cmd := app.Command("run", "Run a pipeline on this machine with no server: an in-process manager and delegate run it, logs stream to the terminal, the exit code is the result (0 success, 1 failed, 2 config error, 130 interrupted).")
	f := &runFlags{env: map[string]string{}, extStr: map[string]string{}}
	cmd.Arg("path", "A directory holding config.jsonnet, config.json or config.yml, or a config file.").Default(".").StringVar(&f.path)
	cmd.Flag("env", "Environment variable K=V given to every step (repeatable).").StringMapVar(&f.env)
	cmd.Flag("secret", "Secret NAME=VALUE, or NAME to take the value from this environment (repeatable). Values are never printed.").StringsVar(&f.secrets)
	cmd.Flag("ext-str", "Jsonnet external variable K=V (repeatable).").StringMapVar(&f.extStr)
	cmd.Flag("approve", "Grant the approvals stages wait for.").BoolVar(&f.approve)
	cmd.Flag("branch", "Branch of the run, matched against the stages' when.").StringVar(&f.branch)
	cmd.Flag("event", "Event of the run, matched against the stages' when.").StringVar(&f.event)
	cmd.Flag("data-dir", "Keep the run's database and logs here (default: a temporary directory, removed at the end).").StringVar(&f.dataDir)
	cmd.Flag("listen", "Also serve the manager's API on this address while the run lasts, e.g. 127.0.0.1:7700.").StringVar(&f.listen)
	cmd.Action(func(*kingpin.ParseContext) error {
		code, err := runLocal(g.Ctx, f, g.Stdout, g.Stderr)
		if err != nil {
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
func localConfig(path string, ext map[string]string) (src []byte, name string, cfg *pipeline.Config, err error) {
	opts := pipeline.LoadOptions{ExtStr: ext}
	cfg, err = pipeline.Load(path, opts)
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		return nil, "", nil, err
	}
	name, src, err = pipeline.Render(path, opts)
	if err != nil {
		return nil, "", nil, err
	}
	return src, name, cfg, nil
}

// runLocal runs a pipeline with an in-process manager and delegate and
// returns the exit code.
func runLocal(ctx context.Context, f *runFlags, stdout, stderr io.Writer) (int, error) {
	src, name, cfg, err := localConfig(f.path, f.extStr)
	if err != nil {
		fmt.Fprintf(stderr, "errand: the config has errors:\n%s\n", indent(err.Error()))
		return exitConfigError, nil
	}
	secrets, err := secretValues(f.secrets)
	if err != nil {
		return exitUsage, err
	}
	dir := f.dataDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "errand-run-"); err != nil {
			return exitFailed, fmt.Errorf("data dir: %w", err)
		}
		defer os.RemoveAll(dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return exitFailed, fmt.Errorf("data dir: %w", err)
	}

	log := logrus.New()
	log.SetOutput(stderr)
	log.SetLevel(logrus.WarnLevel)
	// The manager and the delegate live until the run ended and its
	// cleanups ran, whatever signal ended ctx.
	life, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()

	st, err := sqlite.Open(life, filepath.Join(dir, "errand.db"))
	if err != nil {
		return exitFailed, err
	}
	objects, err := posix.New(filepath.Join(dir, "objects"))
	if err != nil {
		_ = st.Close()
		return exitFailed, err
	}
	defer objects.Close()
	mcfg := manager.Config{
		Listen: f.listen, AdminToken: randomToken(), RegistrationToken: randomToken(), Log: log,
		HeartbeatInterval: time.Second, SweepInterval: 500 * time.Millisecond,
		Secrets: func(name string) (string, bool) { v, ok := secrets[name]; return v, ok },
	}
	srv, err := manager.New(mcfg, st, objects)
	if err != nil {
		_ = st.Close()
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
	done, err := startLocalDelegate(life, dir, reg, log, usesDocker(cfg))
	if err != nil {
		return exitFailed, err
	}
	defer func() {
		stop()
		<-done
	}()

	run, err := admin.CreateRun(life, &client.RunRequest{Config: string(src), Filename: name,
		Branch: f.branch, Event: f.event, ExtStr: f.extStr, Env: f.env})
	if err != nil {
		return exitFailed, err
	}
	if f.listen != "" {
		if a := srv.Addr(); a != nil {
			fmt.Fprintf(stderr, "errand: manager API on http://%s (admin token in this process only)\n", a)
		}
	}
	return followRun(ctx, admin, run.ID, stdout, followOptions{approve: f.approve, failOnWait: !f.approve, colour: useColour(stdout)})
}

// startLocalDelegate runs an in-process delegate with the host runtime,
// and the docker runtime when the config needs it and a daemon answers,
// until ctx ends. done is closed once it stopped.
func startLocalDelegate(ctx context.Context, dir string, reg *client.HTTP, log *logrus.Logger, wantDocker bool) (<-chan struct{}, error) {
	r := router.New(router.WithLogger(log))
	exec.New(filepath.Join(dir, "delegate")).Register(r)
	var dh *docker.Handlers
	if wantDocker {
		pctx, cancel := context.WithTimeout(ctx, dockerProbeTimeout)
		err := docker.Available(pctx)
		cancel()
		if err != nil {
			log.WithField("reason", err.Error()).Warn("no Docker daemon answers: docker stages will wait")
		} else if dh, err = docker.New(docker.Config{Log: log, Local: true}); err != nil {
			return nil, fmt.Errorf("docker runtime: %w", err)
		} else {
			dh.Register(r)
		}
	}
	d, err := delegate.New(delegate.Config{
		Name: "errand-run", Capacity: max(2, runtime.NumCPU()), StateDir: filepath.Join(dir, "delegate"),
		Client:       reg,
		Authenticate: func(token string) client.Client { return reg.WithToken(token) },
		DrainTimeout: time.Minute, Log: log,
	}, r)
	if err != nil {
		return nil, err
	}
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
	return done, nil
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
