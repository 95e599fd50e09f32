package sqlite

import (
	"database/sql"
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
	started_at, finished_at, version, approvals, approved`

// taskRow is a task as stored.
type taskRow = store.TaskRow

type scanner interface{ Scan(dest ...any) error }

func scanTask(sc scanner) (*taskRow, error) {
	var (
		r                         taskRow
		data, result              []byte
		selector, dependsOn       string
		timeout, created          int64
		cancelReq, hasDeps        int
		errCode, errReason        string
		queued, started, finished sql.NullInt64
	)
	err := sc.Scan(&r.Seq, &r.ID, &r.Type, &data, &selector, &dependsOn, &r.Affinity,
		&r.Priority, &timeout, &r.MaxAttempts, &r.RunID, &r.State, &r.Attempt, &cancelReq,
		&r.DelegateID, &r.LeaseToken, &result, &errCode, &errReason, &r.LogLines, &hasDeps,
		&created, &queued, &started, &finished, &r.Version, &r.Approvals, &r.Approved)
	if err != nil {
		return nil, err
	}
	if len(data) > 0 {
		r.Data = json.RawMessage(data)
	}
	if len(result) > 0 {
		r.Result = json.RawMessage(result)
	}
	if selector != "" {
		if err := json.Unmarshal([]byte(selector), &r.Selector); err != nil {
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
	r.CancelRequested = cancelReq != 0
	r.HasDependents = hasDeps != 0
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
		d                          errand.Delegate
		labels, archs, types       string
		dynamic, overloaded, drain int
		created, heartbeat         int64
	)
	err := sc.Scan(&d.ID, &d.Name, &d.Hostname, &d.Group, &labels, &archs, &d.Capacity,
		&types, &dynamic, &d.Version, &d.State, &overloaded, &drain, &created, &heartbeat)
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
	d.Dynamic = dynamic != 0
	d.Overloaded = overloaded != 0
	d.DrainRequested = drain != 0
	d.CreatedAt = fromNanos(created)
	d.LastHeartbeat = fromNanos(heartbeat)
	return &d, nil
}

// jsonOrEmpty encodes v, or returns "" for an empty value so that the
// common case costs nothing to store and to read.
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

func fromNull(n sql.NullInt64) *time.Time {
	if !n.Valid {
		return nil
	}
	t := fromNanos(n.Int64)
	return &t
}

func nullBytes(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return []byte(b)
}
