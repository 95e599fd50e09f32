package delegate

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/internal/clock"
	"github.com/errandci/errand/poller"
)

// Defaults of a Config.
const (
	DefaultCapacity          = 2
	DefaultDrainTimeout      = 5 * time.Minute
	DefaultHeartbeatInterval = 10 * time.Second
)

// Config is the delegate's whole configuration, filled from flags and
// ERRAND_… environment variables and checked once by Validate.
type Config struct {
	// Manager is the manager's base URL, e.g. http://127.0.0.1:7700.
	Manager string
	// Token is the registration token.
	Token string
	// Name defaults to the hostname.
	Name     string
	Hostname string
	Group    string
	Labels   map[string]string
	// Archs defaults to the architecture the delegate was built for.
	Archs []string
	// Capacity is the number of tasks run at once.
	Capacity int
	// TaskTypes are the types offered; every type the router serves when
	// empty. Each must have a handler.
	TaskTypes []string
	// Dynamic delegates are removed by the manager when they stop
	// heartbeating.
	Dynamic bool
	// StateDir holds the delegate's identity (one file per name, so
	// sibling delegates on a host may share it) and the exec workspaces.
	StateDir string
	// MaxLoad is the 1-minute load average per CPU above which no new
	// task is taken; 0 means no limit.
	MaxLoad float64
	// MinFreeMemory is the available memory in bytes below which no new
	// task is taken; 0 means no limit.
	MinFreeMemory int64
	// DrainTimeout bounds how long running tasks may go on after the
	// delegate is asked to stop; those still running are then cancelled.
	DrainTimeout time.Duration
	// AllowPrivileged lets stages run privileged containers.
	AllowPrivileged bool
	// Version is reported to the manager.
	Version string

	// HeartbeatInterval is kept until the manager says otherwise.
	HeartbeatInterval time.Duration

	// Client, when set, replaces the HTTP client of Manager (e.g. an
	// in-process manager). It sends the registration token; the
	// delegate speaks with its own token through Client.Authenticated.
	Client client.DelegateClient
	// Identity keeps the delegate's identity; a file in StateDir when nil.
	Identity IdentityStore
	// Poller tunes the acquire loop (wait, pool, report timeouts, log
	// batching, backoff); its Session, Router, Capacity, Overloaded,
	// Clock and Logger are the delegate's.
	Poller poller.Config
	// Log receives the delegate's log; logrus.StandardLogger() when nil.
	Log *logrus.Logger
	// ProcDir is where load and memory are read; /proc when empty.
	ProcDir string
	// Clock is the delegate's time (heartbeats, retry waits, resource
	// checks); the system's when nil. Tests move a fake one.
	Clock clock.Clock
}

// setDefaults fills what the operator may leave out.
func (c *Config) setDefaults() {
	if c.Hostname == "" {
		c.Hostname, _ = os.Hostname()
	}
	if c.Name == "" {
		c.Name = c.Hostname
	}
	if len(c.Archs) == 0 {
		c.Archs = []string{runtime.GOARCH}
	}
	if c.Capacity == 0 {
		c.Capacity = DefaultCapacity
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.StateDir == "" {
		if home, err := os.UserHomeDir(); err == nil {
			c.StateDir = filepath.Join(home, ".errand", "delegate")
		}
	}
	if c.ProcDir == "" {
		c.ProcDir = "/proc"
	}
	if c.Log == nil {
		c.Log = logrus.StandardLogger()
	}
}

// Validate fills in the defaults and reports every problem at once.
func (c *Config) Validate() error {
	c.setDefaults()
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Client == nil {
		u, err := url.Parse(c.Manager)
		switch {
		case c.Manager == "":
			bad("manager: the manager's URL is required (--manager, ERRAND_MANAGER)")
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			bad("manager: %q is not an http:// or https:// URL", c.Manager)
		}
		if c.Token == "" {
			bad("token: the registration token is required (--token, ERRAND_TOKEN)")
		}
	}
	if c.Name == "" {
		bad("name: required when the hostname is unknown")
	}
	if c.Capacity < 1 {
		bad("capacity: %d; at least 1", c.Capacity)
	}
	for k := range c.Labels {
		if k == "" {
			bad("labels: a label needs a key (k=v)")
		}
	}
	for _, a := range c.Archs {
		if a == "" {
			bad("archs: empty architecture")
		}
	}
	for _, t := range c.TaskTypes {
		if t == "" || len(t) > errand.MaxTaskTypeLen {
			bad("task types: %q is not a task type", t)
		}
	}
	if c.StateDir == "" {
		bad("state dir: required (--state-dir, ERRAND_STATE_DIR)")
	}
	if c.MaxLoad < 0 {
		bad("max load: %v; 0 (no limit) or more", c.MaxLoad)
	}
	if c.MinFreeMemory < 0 {
		bad("min free memory: %d; 0 (no limit) or more", c.MinFreeMemory)
	}
	if c.DrainTimeout < 0 {
		bad("drain timeout: %s; 0 or more", c.DrainTimeout)
	}
	return errors.Join(errs...)
}
