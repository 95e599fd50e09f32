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
	MinPriority = -1000
	MaxPriority = 1000
	// MaxBatch bounds the number of tasks created in one request.
	MaxBatch = 10000
	maxIDLen = 128
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

// validID reports whether id may name a task or a delegate: 1 to 128
// letters, digits, '.', '_', ':' or '-', starting with a letter or a
// digit. An id is a component of object keys (logs/<id>/0): it is never
// "." or "..", nor hidden, nor an option.
func validID(id string) bool {
	if id == "" || len(id) > maxIDLen || !isAlnum(id[0]) {
		return false
	}
	for _, c := range []byte(id) {
		if !isAlnum(c) && c != '.' && c != '_' && c != ':' && c != '-' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// validateSpec appends the problems of one spec to problems, each with
// its path under prefix ("" for a single spec, "tasks[3]." in a batch).
func validateSpec(prefix string, sp *client.TaskSpec, problems []string) []string {
	add := func(field, format string, args ...any) {
		problems = append(problems, prefix+field+": "+fmt.Sprintf(format, args...))
	}
	if sp == nil {
		add("(task)", "must be an object")
		return problems
	}
	if sp.ID != "" && !validID(sp.ID) {
		add("id", "must be 1 to %d letters, digits, '.', '_', ':' or '-', starting with a letter or a digit", maxIDLen)
	}
	switch {
	case sp.Type == "":
		add("type", "required")
	case len(sp.Type) > errand.MaxTaskTypeLen:
		add("type", "longer than %d characters", errand.MaxTaskTypeLen)
	case errand.TextProblem(sp.Type) != "":
		add("type", "%s", errand.TextProblem(sp.Type))
	}
	for _, p := range errand.SelectorProblems("selector", sp.Selector) {
		problems = append(problems, prefix+p)
	}
	if sp.Timeout < 0 {
		add("timeout", "must not be negative")
	}
	if sp.MaxAttempts < 0 || sp.MaxAttempts > errand.MaxMaxAttempts {
		add("max_attempts", "must be between 0 (default %d) and %d", errand.DefaultMaxAttempts, errand.MaxMaxAttempts)
	}
	if sp.Priority < MinPriority || sp.Priority > MaxPriority {
		add("priority", "must be between %d and %d", MinPriority, MaxPriority)
	}
	if data := bytes.TrimSpace(sp.Data); len(data) > 0 && !bytes.Equal(data, []byte("null")) && data[0] != '{' {
		add("data", "must be a JSON object")
	}
	if sp.Affinity != "" && !validID(sp.Affinity) {
		add("affinity", "not a valid task id")
	}
	if sp.Affinity != "" && sp.Affinity == sp.ID {
		add("affinity", "a task cannot follow itself")
	}
	for i, dep := range sp.DependsOn {
		path := fmt.Sprintf("depends_on[%d]", i)
		switch {
		case dep.Task == "":
			add(path+".task", "required")
		case !validID(dep.Task):
			add(path+".task", "not a valid task id")
		case dep.Task == sp.ID:
			add(path+".task", "a task cannot depend on itself")
		}
		if !dep.Condition.Valid() {
			add(path+".condition", "unknown condition %q (want on_success, on_failure, on_skipped or always)", dep.Condition)
		}
	}
	return problems
}

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

func (s *Server) createTasks(w http.ResponseWriter, r *http.Request, _ principal) error {
	specs, batch, err := s.decodeTaskSpecs(r)
	if err != nil {
		return err
	}
	var problems []string
	switch {
	case batch && len(specs) == 0:
		problems = append(problems, "tasks: at least one task is required")
	case len(specs) > MaxBatch:
		problems = append(problems, fmt.Sprintf("tasks: at most %d tasks per request", MaxBatch))
	}
	seen := make(map[string]int)
	for i, sp := range specs {
		prefix := ""
		if batch {
			prefix = fmt.Sprintf("tasks[%d].", i)
		}
		problems = validateSpec(prefix, sp, problems)
		if sp != nil && sp.ID != "" {
			if j, dup := seen[sp.ID]; dup {
				problems = append(problems, fmt.Sprintf("%sid: %q is also the id of tasks[%d]", prefix, sp.ID, j))
			}
			seen[sp.ID] = i
		}
	}
	if err := invalid("task", problems); err != nil {
		return err
	}
	tasks := make([]*errand.Task, len(specs))
	for i, sp := range specs {
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
	created, err := s.sched.Create(r.Context(), tasks)
	if err != nil {
		return err
	}
	for _, t := range created {
		userTask(t)
	}
	if !batch {
		httphelper.WriteJSON(w, created[0], http.StatusCreated)
		return nil
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
