package errand

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
)

// Secrets by name.
//
// A task's data names the secrets it needs in SecretNamesField, a list of
// names; the values live only in the manager's secret source. What is
// stored (the task, a run's plan) therefore holds no value. When the task
// is leased, the manager puts the values into the copy it hands to the
// delegate, under SecretsField (an object of name → value), and drops the
// names: a handler reads its secrets as if they had been written in the
// data.
const (
	// SecretNamesField is the data field that names a task's secrets.
	SecretNamesField = "secret_names"
	// SecretsField is the data field that holds secret values in the
	// leased copy of a task.
	SecretsField = "secrets"
	// CodeSecretMissing ends a task whose secret the manager's secret
	// source does not hold when the task is leased.
	CodeSecretMissing = "secret_missing"
)

// SecretNames returns the names of the secrets that task data names
// (SecretNamesField), nil when it names none.
func SecretNames(data json.RawMessage) ([]string, error) {
	if !bytes.Contains(data, []byte(`"`+SecretNamesField+`"`)) {
		return nil, nil
	}
	var fields struct {
		Names []string `json:"secret_names"`
	}
	if err := json.Unmarshal(data, &fields); err != nil {
		return nil, fmt.Errorf("secret names in task data: %w", err)
	}
	return fields.Names, nil
}

// WithSecrets returns task data whose secret names are replaced by their
// values: SecretNamesField is dropped and values are merged into
// SecretsField (a value already there wins, as the task's author wrote
// it). Data that names no secret is returned as it is.
func WithSecrets(data json.RawMessage, values map[string]string) (json.RawMessage, error) {
	if !bytes.Contains(data, []byte(`"`+SecretNamesField+`"`)) {
		return data, nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return nil, fmt.Errorf("task data: %w", err)
	}
	if _, ok := fields[SecretNamesField]; !ok {
		return data, nil
	}
	delete(fields, SecretNamesField)
	merged := make(map[string]string, len(values))
	maps.Copy(merged, values)
	if raw, ok := fields[SecretsField]; ok && !bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		var written map[string]string
		if err := json.Unmarshal(raw, &written); err != nil {
			return nil, fmt.Errorf("secrets in task data: %w", err)
		}
		maps.Copy(merged, written)
	}
	if len(merged) > 0 {
		b, err := json.Marshal(merged)
		if err != nil {
			return nil, fmt.Errorf("secrets in task data: %w", err)
		}
		fields[SecretsField] = b
	}
	out, err := json.Marshal(fields)
	if err != nil {
		return nil, fmt.Errorf("task data: %w", err)
	}
	return out, nil
}
