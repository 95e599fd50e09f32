package postgres

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

// taskCols are the columns scanTask reads, in order.
const taskCols = `seq, id, type, data, selector, depends_on, affinity, priority, timeout,
	max_attempts, run_id, state, attempt, cancel_requested, delegate_id, lease_token,
	result, error_code, error_reason, log_lines, has_dependents, created_at, queued_at,
	started_at, finished_at, approvals, approved`

// taskRow is a task as stored.
type taskRow = store.TaskRow

type scanner interface{ Scan(dest ...any) error }

func scanTask(sc scanner) (*taskRow, error) {
	var (
		r                         taskRow
		data, result, selector    []byte
		dependsOn                 string
		timeout, created          int64
		errCode, errReason        string
		queued, started, finished *int64
	)
	err := sc.Scan(&r.Seq, &r.ID, &r.Type, &data, &selector, &dependsOn, &r.Affinity,
		&r.Priority, &timeout, &r.MaxAttempts, &r.RunID, &r.State, &r.Attempt, &r.CancelRequested,
		&r.DelegateID, &r.LeaseToken, &result, &errCode, &errReason, &r.LogLines, &r.HasDependents,
		&created, &queued, &started, &finished, &r.Approvals, &r.Approved)
	if err != nil {
		return nil, err
	}
	if len(data) > 0 {
		r.Data = json.RawMessage(data)
	}
	if len(result) > 0 {
		r.Result = json.RawMessage(result)
	}
	if len(selector) > 0 && string(selector) != "{}" {
		if err := json.Unmarshal(selector, &r.Selector); err != nil {
			return nil, fmt.Errorf("task %s selector: %w", r.ID, err)
		}
	}
	if dependsOn != "" {
		if err := json.Unmarshal([]byte(dependsOn), &r.DependsOn); err != nil {
			return nil, fmt.Errorf("task %s depends_on: %w", r.ID, err)
		}
	}
	r.Kind = errand.KindTask
	r.Timeout = errand.Duration(timeout)
	if errCode != "" {
		r.Error = &errand.Error{Code: errCode, Reason: errReason}
	}
	r.CreatedAt = fromNanos(created)
	r.QueuedAt = fromNull(queued)
	r.StartedAt = fromNull(started)
	r.FinishedAt = fromNull(finished)
	return &r, nil
}

const delegateCols = `id, name, hostname, grp, labels, archs, capacity, task_types, dynamic,
	version, state, overloaded, drain_requested, created_at, last_heartbeat`

func scanDelegate(sc scanner) (*errand.Delegate, error) {
	var (
		d                    errand.Delegate
		labels, archs, types string
		created, heartbeat   int64
	)
	err := sc.Scan(&d.ID, &d.Name, &d.Hostname, &d.Group, &labels, &archs, &d.Capacity,
		&types, &d.Dynamic, &d.Version, &d.State, &d.Overloaded, &d.DrainRequested, &created, &heartbeat)
	if err != nil {
		return nil, err
	}
	for _, f := range []struct {
		s string
		v any
	}{{labels, &d.Labels}, {archs, &d.Archs}, {types, &d.TaskTypes}} {
		if f.s == "" {
			continue
		}
		if err := json.Unmarshal([]byte(f.s), f.v); err != nil {
			return nil, fmt.Errorf("delegate %s: %w", d.ID, err)
		}
	}
	d.Kind = errand.KindDelegate
	d.CreatedAt = fromNanos(created)
	d.LastHeartbeat = fromNanos(heartbeat)
	return &d, nil
}

// jsonOrEmpty encodes v, or returns "" for an empty value.
func jsonOrEmpty(v any, empty bool) (string, error) {
	if empty {
		return "", nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

func nanos(t time.Time) int64 { return t.UnixNano() }

func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

func fromNull(n *int64) *time.Time {
	if n == nil {
		return nil
	}
	t := fromNanos(*n)
	return &t
}

func nullTime(t *time.Time) *int64 {
	if t == nil {
		return nil
	}
	n := nanos(*t)
	return &n
}

func nullBytes(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}
