package scheduler

import (
	"context"
	"fmt"
	"os"

	"github.com/errandci/errand"
)

// SecretSource holds the values of the secrets that tasks name
// (errand.SecretNamesField). The scheduler asks it when it leases a task,
// so that no value is ever written to the store; the log service asks it
// to mask what delegates send.
type SecretSource interface {
	// Secret returns the value of the secret name; ok is false when the
	// source holds no such secret. An error says the source could not be
	// read.
	Secret(ctx context.Context, name string) (value string, ok bool, err error)
}

// EnvPrefix prefixes the manager's environment variables that hold
// secrets: ERRAND_SECRET_DEPLOY_KEY is DEPLOY_KEY.
const EnvPrefix = "ERRAND_SECRET_"

// EnvSecrets is the secret source of a manager's environment: the value
// of a secret NAME is the variable EnvPrefix+NAME.
type EnvSecrets struct{}

// Secret implements SecretSource.
func (EnvSecrets) Secret(_ context.Context, name string) (string, bool, error) {
	v, ok := os.LookupEnv(EnvPrefix + name)
	return v, ok, nil
}

// SecretFunc is a secret source written as a function, such as a lookup
// in the values a local run was given.
type SecretFunc func(name string) (string, bool)

// Secret implements SecretSource.
func (f SecretFunc) Secret(_ context.Context, name string) (string, bool, error) {
	v, ok := f(name)
	return v, ok, nil
}

// SecretMap is a secret source of fixed values.
type SecretMap map[string]string

// Secret implements SecretSource.
func (m SecretMap) Secret(_ context.Context, name string) (string, bool, error) {
	v, ok := m[name]
	return v, ok, nil
}

// SecretValues looks up the values of names in src. A missing secret, or
// a source that cannot be read, is an error with errand.CodeSecretMissing
// that names the secret, never a value.
func SecretValues(ctx context.Context, src SecretSource, names []string) (map[string]string, error) {
	if len(names) == 0 {
		return nil, nil
	}
	values := make(map[string]string, len(names))
	for _, name := range names {
		v, ok, err := src.Secret(ctx, name)
		if err != nil {
			return nil, errand.Errorf(errand.CodeSecretMissing, "secret %s cannot be read from the manager's secret source: %v", name, err)
		}
		if !ok {
			return nil, errand.Errorf(errand.CodeSecretMissing, "secret %s is not set on the manager (for a manager reading its environment: %s%s)", name, EnvPrefix, name)
		}
		values[name] = v
	}
	return values, nil
}

// LeaseSecrets puts the values of the secrets that a leased task names
// into its data. The task is the leased copy, never stored again.
func LeaseSecrets(ctx context.Context, src SecretSource, t *errand.Task) error {
	names, err := errand.SecretNames(t.Data)
	if err != nil {
		return errand.Errorf(errand.CodeSecretMissing, "task %s: %v", t.ID, err)
	}
	if len(names) == 0 {
		return nil
	}
	values, err := SecretValues(ctx, src, names)
	if err != nil {
		return err
	}
	data, err := errand.WithSecrets(t.Data, values)
	if err != nil {
		return fmt.Errorf("task %s: %w", t.ID, err)
	}
	t.Data = data
	return nil
}
