package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/sirupsen/logrus"

	"github.com/errandci/errand/manager"
)

func init() { commands = append(commands, addManagerCommand) }

func addManagerCommand(app *kingpin.Application, g *globals) {
	cmd := app.Command("manager", "Run the manager: the API that queues tasks and hands them to delegates.")
	var cfg manager.Config
	cmd.Flag("listen", "Address to serve the API on.").Envar("ERRAND_LISTEN").
		Default("127.0.0.1:7700").StringVar(&cfg.Listen)
	cmd.Flag("data-dir", "Directory of the SQLite database, the posix object store and the generated tokens.").
		Envar("ERRAND_DATA_DIR").Default("./errand-data").StringVar(&cfg.DataDir)
	cmd.Flag("store", "Task store: sqlite (under --data-dir) or a postgres:// URL.").Envar("ERRAND_STORE").
		Default("sqlite").StringVar(&cfg.Store)
	cmd.Flag("objects", "Object storage for logs: posix (under --data-dir) or s3://bucket/base?endpoint=host:port&secure=false.").
		Envar("ERRAND_OBJECTS").Default("posix").StringVar(&cfg.Objects)
	cmd.Flag("admin-token", "Token of the user API (default: generated and stored in --data-dir).").
		Envar("ERRAND_ADMIN_TOKEN").StringVar(&cfg.AdminToken)
	cmd.Flag("registration-token", "Token delegates register with (default: generated and stored in --data-dir).").
		Envar("ERRAND_REGISTRATION_TOKEN").StringVar(&cfg.RegistrationToken)
	cmd.Flag("heartbeat-interval", "Interval delegates are told to heartbeat at.").Envar("ERRAND_HEARTBEAT_INTERVAL").
		Default(manager.DefaultHeartbeatInterval.String()).DurationVar(&cfg.HeartbeatInterval)
	cmd.Flag("lease-ttl", "How long a delegate may stay silent before its tasks are retried (default: 4 heartbeat intervals).").
		Envar("ERRAND_LEASE_TTL").DurationVar(&cfg.LeaseTTL)
	cmd.Flag("max-run-stages", "Most stages a submitted run may have; more is refused with 400 (0: the default).").Envar("ERRAND_MAX_RUN_STAGES").
		Default(strconv.Itoa(manager.DefaultMaxRunStages)).IntVar(&cfg.MaxRunStages)
	cmd.Flag("max-stage-steps", "Most steps one stage of a submitted run may have.").Envar("ERRAND_MAX_STAGE_STEPS").
		Default(strconv.Itoa(manager.DefaultMaxStageSteps)).IntVar(&cfg.MaxStageSteps)
	cmd.Flag("max-run-tasks", "Most tasks a submitted run may have: steps, and each stage's initialize, cleanup and approval gate.").Envar("ERRAND_MAX_RUN_TASKS").
		Default(strconv.Itoa(manager.DefaultMaxRunTasks)).IntVar(&cfg.MaxRunTasks)
	cmd.Flag("max-wait", "Longest acquire long-poll.").Envar("ERRAND_MAX_WAIT").
		Default(manager.DefaultMaxWait.String()).DurationVar(&cfg.MaxWait)
	cmd.Flag("sweep-interval", "How often expired leases and timeouts are checked.").Envar("ERRAND_SWEEP_INTERVAL").
		Default(manager.DefaultSweepInterval.String()).DurationVar(&cfg.SweepInterval)
	cmd.Flag("allow-file-sources", "Let a run's Git source be a file:// URL, read on this host to resolve its ref (tests, local use).").
		Envar("ERRAND_ALLOW_FILE_SOURCES").BoolVar(&cfg.AllowFileSources)
	addWebhookFlags(cmd, &cfg.Webhooks)
	jf := addJsonnetFlags(cmd)
	af := addArtifactFlags(cmd, &cfg)
	lf := addLogFlags(cmd)
	prof := addCPUProfileFlag(cmd, "ERRAND_CPU_PROFILE")

	cmd.Action(g.action(func(ctx context.Context) error {
		if err := jf.validate(); err != nil {
			return err
		}
		if err := af.apply(&cfg); err != nil {
			return err
		}
		if err := prof.start(); err != nil {
			return err
		}
		defer prof.stop()
		cfg.JsonnetTimeout, cfg.JsonnetMemory = jf.timeout, int64(jf.memory)
		log := lf.logger(g.Stderr)
		cfg.Log = log
		return runManager(ctx, g, cfg)
	}))
}

// runManager serves until ctx ends (SIGINT, SIGTERM), then shuts down
// gracefully.
func runManager(ctx context.Context, g *globals, cfg manager.Config) error {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	srv, err := manager.Open(ctx, cfg)
	if err != nil {
		return fmt.Errorf("open manager: %w", err)
	}
	admin, reg := manager.TokenPaths(cfg.DataDir)
	if cfg.AdminToken == "" {
		fmt.Fprintf(g.Stdout, "admin token: %s\n", admin)
	}
	if cfg.RegistrationToken == "" {
		fmt.Fprintf(g.Stdout, "registration token: %s\n", reg)
	}
	start := time.Now()
	err = srv.ListenAndServe(ctx)
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("serve: %w", err)
	}
	cfg.Log.WithFields(logrus.Fields{"uptime": time.Since(start).Round(time.Second)}).Info("manager stopped")
	return nil
}
