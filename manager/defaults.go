package manager

import (
	"errors"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/errandci/errand/manager/scheduler"
)

// Defaults of Config, applied by SetDefaults.
const (
	DefaultHeartbeatInterval      = 15 * time.Second
	DefaultMaxWait                = 60 * time.Second
	DefaultMaxBodyBytes           = 4 << 20
	DefaultLogObjectSize          = 10 << 20
	DefaultSweepInterval          = time.Second
	DefaultTimeoutGrace           = 30 * time.Second
	DefaultHeartbeatFlushInterval = time.Second
	DefaultSealInterval           = 2 * time.Second
)

// minTokenLen is the shortest admin or registration token accepted: a
// shorter one could be guessed.
const minTokenLen = 16

// SetDefaults fills the zero fields of c with their defaults.
func (c *Config) SetDefaults() {
	if c.Store == "" {
		c.Store = "sqlite"
	}
	if c.Objects == "" {
		c.Objects = "posix"
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 4 * c.HeartbeatInterval
	}
	if c.MaxWait == 0 {
		c.MaxWait = DefaultMaxWait
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.LogObjectSize == 0 {
		c.LogObjectSize = DefaultLogObjectSize
	}
	if c.MaxRunStages == 0 {
		c.MaxRunStages = DefaultMaxRunStages
	}
	if c.MaxStageSteps == 0 {
		c.MaxStageSteps = DefaultMaxStageSteps
	}
	if c.MaxRunTasks == 0 {
		c.MaxRunTasks = DefaultMaxRunTasks
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = DefaultSweepInterval
	}
	if c.TimeoutGrace == 0 {
		c.TimeoutGrace = DefaultTimeoutGrace
	}
	if c.HeartbeatFlushInterval == 0 {
		c.HeartbeatFlushInterval = DefaultHeartbeatFlushInterval
	}
	if c.SealInterval == 0 {
		c.SealInterval = DefaultSealInterval
	}
	if c.Log == nil {
		c.Log = logrus.StandardLogger()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Secrets == nil {
		c.Secrets = scheduler.EnvSecrets{}
	}
	c.Webhooks.setDefaults()
}

// Validate reports every problem of a configuration with defaults
// applied. Tokens are checked only when set: Open generates missing ones.
func (c *Config) Validate() error {
	var errs []error
	positive := func(name string, d time.Duration) {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, not %s", name, d))
		}
	}
	positive("heartbeat interval", c.HeartbeatInterval)
	positive("lease TTL", c.LeaseTTL)
	positive("max wait", c.MaxWait)
	positive("sweep interval", c.SweepInterval)
	positive("heartbeat flush interval", c.HeartbeatFlushInterval)
	positive("seal interval", c.SealInterval)
	if c.TimeoutGrace < 0 {
		errs = append(errs, fmt.Errorf("timeout grace must not be negative, not %s", c.TimeoutGrace))
	}
	if c.LeaseTTL > 0 && c.LeaseTTL < c.HeartbeatInterval {
		errs = append(errs, fmt.Errorf("lease TTL %s is shorter than the heartbeat interval %s: every delegate would be lost", c.LeaseTTL, c.HeartbeatInterval))
	}
	if err := c.jsonnetLimits().Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.MaxBodyBytes < 1024 {
		errs = append(errs, fmt.Errorf("max body bytes must be at least 1024, not %d", c.MaxBodyBytes))
	}
	if c.LogObjectSize < 1024 {
		errs = append(errs, fmt.Errorf("log object size must be at least 1024 bytes, not %d", c.LogObjectSize))
	}
	for _, b := range []struct {
		name string
		n    int
	}{{"max run stages", c.MaxRunStages}, {"max stage steps", c.MaxStageSteps}, {"max run tasks", c.MaxRunTasks}} {
		if b.n < 1 {
			errs = append(errs, fmt.Errorf("%s must be at least 1, not %d", b.name, b.n))
		}
	}
	for _, tok := range []struct{ name, value string }{{"admin token", c.AdminToken}, {"registration token", c.RegistrationToken}} {
		if tok.value != "" && len(tok.value) < minTokenLen {
			errs = append(errs, fmt.Errorf("%s must be at least %d characters", tok.name, minTokenLen))
		}
	}
	errs = append(errs, c.Webhooks.validate()...)
	if c.AdminToken != "" && c.AdminToken == c.RegistrationToken {
		errs = append(errs, errors.New("admin token and registration token must differ"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid manager configuration: %w", err)
	}
	return nil
}
