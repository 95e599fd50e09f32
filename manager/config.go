// Package manager is Errand's manager service: the HTTP API (v1) over the
// scheduler (package scheduler: leases, long-polls, heartbeats, cancels,
// the sweep), pipeline runs and task logs, with the log sealer that moves
// ended tasks' logs into object storage. Its handlers decode a request,
// call a service and encode the answer; errors are written in one place.
package manager

import (
	"time"

	"github.com/sirupsen/logrus"

	"github.com/errandci/errand/internal/jsonnetbox"
	"github.com/errandci/errand/manager/scheduler"
)

// Config is the manager's whole configuration, filled from flags and
// ERRAND_… environment variables and checked once by Validate.
type Config struct {
	// Listen is the address to serve on, e.g. 127.0.0.1:7700.
	Listen string
	// DataDir holds the SQLite database, the posix object store and the
	// generated token files.
	DataDir string
	// Store is "sqlite" (the default, under DataDir) or a postgres:// URL.
	Store string
	// Objects is "posix" (the default, under DataDir) or
	// s3://bucket/base?endpoint=host:port&secure=false.
	Objects string
	// ObjectsPartSize and ObjectsConcurrency tune uploads to S3: the
	// size of the parts of a multipart upload and how many are sent at
	// once (0: s3.DefaultPartSize, s3.DefaultConcurrency). One upload
	// holds PartSize × Concurrency bytes in memory.
	ObjectsPartSize    int64
	ObjectsConcurrency int
	// AdminToken and RegistrationToken are generated and stored in
	// DataDir (mode 0600) when empty.
	AdminToken        string
	RegistrationToken string
	// ID is the manager's identity, told to delegates when they register
	// and list delegates, which put it on the Docker resources they create
	// so that two managers' delegates sharing a Docker daemon never touch
	// each other's. Open keeps it in the object storage (generated on
	// first start, so replicas sharing the storage share it); New makes a
	// random one when it is empty.
	ID string

	// HeartbeatInterval is what delegates are told to keep (default 10s).
	HeartbeatInterval time.Duration
	// LeaseTTL is how long a delegate may stay silent before it is lost
	// and its tasks are retried (default 4 heartbeat intervals).
	LeaseTTL time.Duration
	// MaxWait bounds an acquire long-poll (default 60s).
	MaxWait time.Duration
	// MaxBodyBytes bounds request bodies (default 4 MiB).
	MaxBodyBytes int64
	// MaxRunStages, MaxStageSteps and MaxRunTasks bound a submitted run:
	// its stages (default 1000), the steps of one stage (default 200) and
	// its tasks in all, steps plus each stage's initialize, cleanup and
	// approval gate (default 10000). A run past one is refused with 400.
	MaxRunStages  int
	MaxStageSteps int
	MaxRunTasks   int
	// LogObjectSize bounds one sealed log object (default 10 MiB).
	LogObjectSize int64
	// SweepInterval is how often leases and timeouts are checked
	// (default 1s).
	SweepInterval time.Duration
	// TimeoutGrace is how long past its timeout a running task may still
	// report before the manager ends it timed_out (default 30s): the
	// delegate enforces the timeout itself and should be heard first.
	TimeoutGrace time.Duration
	// HeartbeatFlushInterval is how often recorded heartbeats are written
	// to the store, all delegates in one write (default 1s).
	HeartbeatFlushInterval time.Duration
	// SealInterval is how often ended tasks' logs are moved into object
	// storage (default 2s); a task ending also wakes the sealer.
	SealInterval time.Duration

	// JsonnetTimeout bounds the evaluation of a submitted Jsonnet config
	// (default 10s); JsonnetMemory bounds its memory in bytes (default
	// 256 MiB, at least 64 MiB). The evaluation runs in a child process
	// of this program, killed at either limit: the program must call
	// pipeline.ServeJsonnet at the start of main.
	JsonnetTimeout time.Duration
	JsonnetMemory  int64

	// Secrets holds the values of the secrets that pipelines name; nil
	// reads ERRAND_SECRET_<NAME> from the manager's environment
	// (scheduler.EnvSecrets). Values are looked up when a run is planned
	// (to refuse one that cannot be masked), when a task is leased and
	// when what a delegate sends is masked; they are never stored.
	Secrets scheduler.SecretSource

	// AllowFileSources lets a run's Git source be a file URL, which the
	// manager reads on its own host to resolve the source's ref: for
	// tests and local runs.
	AllowFileSources bool
	// Webhooks configures the webhooks that start runs of stored
	// pipelines and the notifications of their runs.
	Webhooks WebhookConfig
	// ArtifactsMaxSize bounds one artifact (one file; default 10 GiB),
	// ArtifactsMaxRunSize the artifacts of one run (default 50 GiB);
	// an upload past one is refused with a reason naming the limit and
	// the file. ArtifactsExpireIn is how long artifacts are kept when
	// their declaration says not (default 30 days).
	ArtifactsMaxSize    int64
	ArtifactsMaxRunSize int64
	ArtifactsExpireIn   time.Duration

	// Log receives the manager's log; logrus.StandardLogger() when nil.
	Log *logrus.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// jsonnetLimits returns the limits of a submitted Jsonnet config's
// evaluation, defaults applied.
func (c *Config) jsonnetLimits() jsonnetbox.Limits {
	return jsonnetbox.Limits{Timeout: c.JsonnetTimeout, Memory: c.JsonnetMemory}
}
