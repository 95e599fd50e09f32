package manager

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/httphelper"
	"github.com/errandci/errand/manager/scheduler"
	"github.com/errandci/errand/manager/store"
)

// Bounds of a task spec.
const (
	// MinPriority and MaxPriority bound a task's priority.
	MinPriority = errand.MinPriority
	MaxPriority = errand.MaxPriority
	// MaxBatch bounds the number of tasks created in one request.
	MaxBatch = errand.MaxBatch
	maxIDLen = errand.MaxIDLen
	// maxListLimit bounds a page of GET /api/v1/tasks.
	maxListLimit     = 1000
	defaultListLimit = 100
)

func taskHref(id string) string { return "/api/v1/tasks/" + id }

func decorateTask(t *errand.Task) *errand.Task {
	t.Kind = errand.KindTask
	t.Href = taskHref(t.ID)
	return t
}

// userTask is a task as the user side of the API shows it: decorated,
// with the values of its secrets masked. Only the delegate that acquires
// the task sees them.
func userTask(t *errand.Task) *errand.Task {
	decorateTask(t)
	t.Data = maskSecrets(t.Data)
	return t
}

// maskSecrets replaces every value of a "secrets" object in task data by
// ******. Data without one is returned as it is.
func maskSecrets(data json.RawMessage) json.RawMessage {
	if !bytes.Contains(data, []byte(`"secrets"`)) {
		return data
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(data, &fields) != nil {
		return data
	}
	var secrets map[string]json.RawMessage
	if json.Unmarshal(fields["secrets"], &secrets) != nil || len(secrets) == 0 {
		return data
	}
	for k := range secrets {
		secrets[k] = json.RawMessage(`"******"`)
	}
	fields["secrets"], _ = json.Marshal(secrets)
	masked, err := json.Marshal(fields)
	if err != nil {
		return data
	}
	return masked
}

// validID reports whether id may name a task or a delegate
// (errand.ValidID).
func validID(id string) bool { return errand.ValidID(id) }

// decodeTaskSpecs reads a single TaskSpec or a TaskBatch.
func (s *Server) decodeTaskSpecs(r *http.Request) (specs []*client.TaskSpec, batch bool, err error) {
	var raw json.RawMessage
	if err := httphelper.DecodeJSON(r, &raw, s.cfg.MaxBodyBytes); err != nil {
		return nil, false, err
	}
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(raw, &probe); err != nil {
		return nil, false, errand.Errorf(errand.CodeInvalid, "request body must be a task or {\"tasks\":[…]}")
	}
	if _, ok := probe["tasks"]; ok {
		var b client.TaskBatch
		if err := httphelper.Unmarshal(raw, &b); err != nil {
			return nil, true, err
		}
		return b.Tasks, true, nil
	}
	var sp client.TaskSpec
	if err := httphelper.Unmarshal(raw, &sp); err != nil {
		return nil, false, err
	}
	return []*client.TaskSpec{&sp}, false, nil
}

// createTasks decodes a task or a batch, has the scheduler validate and
// create it, and encodes what was created.
func (s *Server) createTasks(w http.ResponseWriter, r *http.Request, _ principal) error {
	specs, batch, err := s.decodeTaskSpecs(r)
	if err != nil {
		return err
	}
	tasks := make([]*errand.Task, len(specs))
	for i, sp := range specs {
		if sp == nil {
			continue // not an object: the scheduler says so
		}
		data := sp.Data
		if bytes.Equal(bytes.TrimSpace(data), []byte("null")) {
			data = nil
		}
		tasks[i] = &errand.Task{
			ID: sp.ID, Type: sp.Type, Data: data, Selector: sp.Selector,
			DependsOn: sp.DependsOn, Affinity: sp.Affinity, Priority: sp.Priority,
			Timeout: sp.Timeout, MaxAttempts: sp.MaxAttempts,
		}
	}
	if !batch {
		created, err := s.sched.CreateOne(r.Context(), tasks[0])
		if err != nil {
			return err
		}
		httphelper.WriteJSON(w, userTask(created), http.StatusCreated)
		return nil
	}
	created, err := s.sched.Create(r.Context(), tasks)
	if err != nil {
		return err
	}
	for _, t := range created {
		userTask(t)
	}
	httphelper.WriteJSON(w, &client.TaskList{Kind: errand.KindTaskList, Items: created}, http.StatusCreated)
	return nil
}

func (s *Server) listTasks(w http.ResponseWriter, r *http.Request, _ principal) error {
	q := r.URL.Query()
	p := store.TaskListParams{Type: q.Get("type"), RunID: q.Get("run_id"), After: q.Get("after"), Limit: defaultListLimit}
	for _, v := range splitList(q["state"]) {
		st := errand.State(v)
		if !st.Valid() {
			return errand.Errorf(errand.CodeInvalid, "state: unknown task state %q", v)
		}
		p.States = append(p.States, st)
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxListLimit {
			return errand.Errorf(errand.CodeInvalid, "limit: must be an integer between 1 and %d", maxListLimit)
		}
		p.Limit = n
	}
	switch v := q.Get("order"); v {
	case "", client.OrderAsc:
	case client.OrderDesc:
		p.Desc = true
	default:
		return errand.Errorf(errand.CodeInvalid, "order: must be %q or %q, not %q", client.OrderAsc, client.OrderDesc, v)
	}
	list, err := s.store.TaskList(r.Context(), p)
	if err != nil {
		return fmt.Errorf("list tasks: %w", err)
	}
	out := &client.TaskList{Kind: errand.KindTaskList, Items: list}
	if out.Items == nil {
		out.Items = []*errand.Task{}
	}
	for _, t := range list {
		userTask(t)
	}
	s.sched.ExplainWaiting(r.Context(), list)
	if len(list) == p.Limit {
		out.Next = list[len(list)-1].ID
	}
	httphelper.WriteJSON(w, out, http.StatusOK)
	return nil
}

func (s *Server) getTask(w http.ResponseWriter, r *http.Request, _ principal) error {
	id := r.PathValue("id")
	t, err := s.store.TaskGet(r.Context(), id)
	if err != nil {
		return fmt.Errorf("get task %s: %w", id, err)
	}
	s.sched.ExplainWaiting(r.Context(), []*errand.Task{t})
	httphelper.WriteJSON(w, userTask(t), http.StatusOK)
	return nil
}

func (s *Server) cancelTask(w http.ResponseWriter, r *http.Request, p principal) error {
	if _, err := s.sched.Cancel(r.Context(), r.PathValue("id")); err != nil {
		return err
	}
	s.audit(r.Context(), p, "task.cancel", r.PathValue("id"), "")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) reportStatus(w http.ResponseWriter, r *http.Request, p principal) error {
	id := r.PathValue("id")
	var u client.StatusUpdate
	if err := httphelper.DecodeJSON(r, &u, s.cfg.MaxBodyBytes); err != nil {
		return err
	}
	var problems []string
	if u.Lease == "" {
		problems = append(problems, "lease: required")
	}
	if _, ok := errand.EventForReport(u.State); !ok {
		problems = append(problems, fmt.Sprintf("state: %q cannot be reported (want running, succeeded, failed, cancelled or timed_out)", u.State))
	}
	if err := invalid("status update", problems); err != nil {
		return err
	}
	t, err := s.sched.Report(r.Context(), scheduler.Report{
		TaskID: id, DelegateID: p.delegateID, LeaseToken: u.Lease,
		State: u.State, Result: u.Result, Error: u.Error,
	})
	if err != nil {
		return err
	}
	httphelper.WriteJSON(w, userTask(t), http.StatusOK)
	return nil
}
