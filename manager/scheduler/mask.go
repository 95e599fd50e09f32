package scheduler

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/livelog"
)

// maxTaskMaskers bounds the maskers kept for tasks whose logs arrive.
const maxTaskMaskers = 4096

// taskMaskers keeps, by task id, the masker of each task's secret values
// (nil for a task without secrets): task data does not change, so a
// task's masker is built once. The zero value is ready to use.
type taskMaskers struct {
	mu    sync.Mutex
	byID  map[string]*livelog.Masker
	order []string
}

func (c *taskMaskers) get(id string) (*livelog.Masker, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, ok := c.byID[id]
	return m, ok
}

func (c *taskMaskers) put(id string, m *livelog.Masker) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byID == nil {
		c.byID = make(map[string]*livelog.Masker)
	}
	if _, ok := c.byID[id]; ok {
		return
	}
	c.byID[id] = m
	c.order = append(c.order, id)
	if len(c.order) > maxTaskMaskers {
		delete(c.byID, c.order[0])
		c.order = c.order[1:]
	}
}

// mentionsSecrets reports whether task data may hold secret values or
// name secrets: whether its masker may be other than nil.
func mentionsSecrets(data json.RawMessage) bool {
	return bytes.Contains(data, []byte(`"`+errand.SecretsField+`"`)) || bytes.Contains(data, []byte(`"`+errand.SecretNamesField+`"`))
}

// secretValues returns the values of the "secrets" object of task data
// (values written in a task's data by its author), the string ones.
func secretValues(data json.RawMessage) []string {
	if !bytes.Contains(data, []byte(`"secrets"`)) {
		return nil
	}
	var fields struct {
		Secrets map[string]json.RawMessage `json:"secrets"`
	}
	if json.Unmarshal(data, &fields) != nil {
		return nil
	}
	var values []string
	for _, raw := range fields.Secrets {
		var v string
		if json.Unmarshal(raw, &v) == nil && v != "" {
			values = append(values, v)
		}
	}
	return values
}

// Masker returns the masker of a task's secret values; nil when it has
// none. The manager masks what delegates send (log lines, error
// reasons, results) as well as the delegates do, since it cannot know
// that every delegate masks.
func (s *Scheduler) Masker(ctx context.Context, id string) (*livelog.Masker, error) {
	if m, ok := s.maskers.get(id); ok {
		return m, nil
	}
	t, err := s.store.TaskGet(ctx, id)
	if err != nil {
		return nil, err
	}
	values := secretValues(t.Data)
	names, err := errand.SecretNames(t.Data)
	if err != nil {
		return nil, err
	}
	// Named secrets are masked with the values the source holds now: a
	// secret gone from it since the task was leased failed the task.
	for _, name := range names {
		v, ok, err := s.cfg.Secrets.Secret(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("read secret %s: %w", name, err)
		}
		if ok && v != "" {
			values = append(values, v)
		}
	}
	var m *livelog.Masker
	if len(values) > 0 {
		var short int
		m, short = livelog.NewMasker(values...)
		if short > 0 {
			s.log.WithFields(logrus.Fields{"task_id": id, "secrets": short, "min_bytes": livelog.MinSecretLen}).
				Warn("secret values shorter than the minimum length are not masked")
		}
		if m.Empty() {
			m = nil
		}
	}
	s.maskers.put(id, m)
	return m, nil
}

// MaskLines masks secret values in log lines and makes them valid UTF-8,
// in place: each byte that is not part of valid UTF-8 becomes U+FFFD.
func MaskLines(m *livelog.Masker, lines []string) {
	for i, l := range lines {
		lines[i] = livelog.ValidUTF8(m.Mask(l))
	}
}

// maskReport masks secret values in what a delegate reports of a task's
// end: the error's reason and every string (keys included) of the result.
func (s *Scheduler) maskReport(ctx context.Context, id string, result json.RawMessage, e *errand.Error) (json.RawMessage, *errand.Error, error) {
	if len(result) == 0 && (e == nil || e.Reason == "") {
		return result, e, nil
	}
	m, err := s.Masker(ctx, id)
	if err != nil {
		// Fail closed: a report whose secrets cannot be known is not
		// stored unmasked; the delegate retries it.
		return nil, nil, err
	}
	if m == nil {
		return result, e, nil
	}
	if e != nil {
		e = &errand.Error{Code: e.Code, Reason: m.Mask(e.Reason)}
	}
	return maskJSON(m, result), e, nil
}

// maskJSON returns a JSON value with secret values masked in its strings;
// a value with nothing to mask (or that is not JSON) is returned as it is.
func maskJSON(m *livelog.Masker, raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 {
		return raw
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		return raw
	}
	v, changed := maskValue(m, v)
	if !changed {
		return raw
	}
	out, err := json.Marshal(v)
	if err != nil {
		return raw
	}
	return out
}

func maskValue(m *livelog.Masker, v any) (any, bool) {
	switch x := v.(type) {
	case string:
		y := m.Mask(x)
		return y, y != x
	case []any:
		changed := false
		for i, e := range x {
			var c bool
			x[i], c = maskValue(m, e)
			changed = changed || c
		}
		return x, changed
	case map[string]any:
		changed := false
		out := make(map[string]any, len(x))
		for k, e := range x {
			e, c := maskValue(m, e)
			mk := m.Mask(k)
			changed = changed || c || mk != k
			out[mk] = e
		}
		return out, changed
	}
	return v, false
}
