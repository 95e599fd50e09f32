package web

import (
	"bytes"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
)

// pageNames are the templates under templates/, each rendered inside
// layout.html.
var pageNames = []string{"pipelines", "pipeline", "signin", "error", "runs", "run", "newrun", "tasks", "task", "delegates", "users", "user", "audit"}

func parsePages() (map[string]*template.Template, error) {
	funcs := template.FuncMap{
		"since":    since,
		"duration": func(d errand.Duration) string { return fmtDuration(time.Duration(d)) },
		"join":     strings.Join,
		"lower":    strings.ToLower,
	}
	out := map[string]*template.Template{}
	for _, name := range pageNames {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("web: parse %s: %w", name, err)
		}
		out[name] = t
	}
	return out, nil
}

// view is what every page's template gets.
type view struct {
	Title   string
	Session *session
	Data    any
	// Refresh asks the page script to refresh the #live part.
	Refresh bool
}

func (h *Handler) render(w http.ResponseWriter, r *http.Request, s *session, page string, status int, title string, data any) {
	h.renderView(w, r, page, status, &view{Title: title, Session: s, Data: data})
}

func (h *Handler) renderView(w http.ResponseWriter, r *http.Request, page string, status int, v *view) {
	var buf bytes.Buffer
	if err := h.pages[page].Execute(&buf, v); err != nil {
		h.cfg.Log.WithError(err).WithField("page", page).Error("render page")
		http.Error(w, "the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// since formats a time or a *time.Time; a missing one is empty.
func since(v any) string {
	var t time.Time
	switch x := v.(type) {
	case time.Time:
		t = x
	case *time.Time:
		if x != nil {
			t = *x
		}
	}
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05")
}

func fmtDuration(d time.Duration) string {
	if d <= 0 {
		return ""
	}
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// runFilter is the runs page's filter, kept in the URL.
type runFilter struct {
	Phase, Result, Branch, Event, Text string
}

func (f runFilter) match(r *client.Run) bool {
	if f.Phase != "" && r.Phase != f.Phase || f.Result != "" && r.Result != f.Result ||
		f.Branch != "" && r.Branch != f.Branch || f.Event != "" && r.Event != f.Event {
		return false
	}
	if f.Text != "" {
		t := strings.ToLower(f.Text)
		hay := strings.ToLower(strings.Join([]string{r.ID, r.Filename, r.Branch, r.Event, r.Phase, r.Result, r.CreatedBy}, " "))
		return strings.Contains(hay, t)
	}
	return true
}

// runsScan bounds how many of the newest runs the runs page filters.
const runsScan = 500

type runsData struct {
	Filter runFilter
	Runs   []*client.Run
	// Scanned is how many of the newest runs were filtered; More says
	// older ones exist that were not.
	Scanned int
	More    bool
	Phases  []string
	Results []string
}

func (h *Handler) runsPage(w http.ResponseWriter, r *http.Request, s *session) error {
	q := r.URL.Query()
	f := runFilter{Phase: q.Get("phase"), Result: q.Get("result"), Branch: q.Get("branch"), Event: q.Get("event"), Text: q.Get("text")}
	d := &runsData{Filter: f, Phases: []string{"queued", "running", "finished", "setuperror"},
		Results: []string{"unknown", "success", "failed", "cancelled"}}
	api := h.api(s)
	after := ""
	for d.Scanned < runsScan {
		page, err := api.ListRuns(r.Context(), &client.RunFilter{After: after, Limit: 100})
		if err != nil {
			return fmt.Errorf("list runs: %w", err)
		}
		for _, run := range page.Items {
			d.Scanned++
			if f.match(run) && len(d.Runs) < 100 {
				d.Runs = append(d.Runs, run)
			}
		}
		after = page.Next
		if after == "" {
			break
		}
	}
	d.More = after != ""
	h.renderView(w, r, "runs", http.StatusOK, &view{Title: "Runs", Session: s, Data: d, Refresh: true})
	return nil
}

type newRunData struct {
	CSRF, Config, Filename, Branch, Event, Problem string
}

const sampleConfig = `stages:
  - name: build
    steps:
      - name: hello
        commands: [echo hello]
`

func (h *Handler) newRunPage(w http.ResponseWriter, r *http.Request, s *session) error {
	h.render(w, r, s, "newrun", http.StatusOK, "New run", &newRunData{CSRF: s.CSRF, Config: sampleConfig, Filename: "config.yml"})
	return nil
}

func (h *Handler) submitRun(w http.ResponseWriter, r *http.Request, s *session) error {
	req := &client.RunRequest{Config: r.PostFormValue("config"), Filename: r.PostFormValue("filename"),
		Branch: r.PostFormValue("branch"), Event: r.PostFormValue("event")}
	switch req.Filename {
	case "config.yml", "config.json", "config.jsonnet":
	default:
		req.Filename = "config.yml"
	}
	run, err := h.api(s).CreateRun(r.Context(), req)
	if err != nil {
		if errand.ErrorCode(err) == errand.CodeInvalid {
			h.render(w, r, s, "newrun", http.StatusBadRequest, "New run", &newRunData{CSRF: s.CSRF, Config: req.Config,
				Filename: req.Filename, Branch: req.Branch, Event: req.Event, Problem: err.Error()})
			return nil
		}
		return fmt.Errorf("submit run: %w", err)
	}
	return redirect(w, r, Prefix+"runs/"+url.PathEscape(run.ID))
}

// stageColumn is one column of the stage graph: the stages whose longest
// chain of dependencies has the same length.
type stageColumn struct {
	Stages []*client.RunStage
}

type runData struct {
	CSRF    string
	Run     *client.Run
	Columns []stageColumn
	Active  bool
}

// stageColumns lays the stages out by depth: a stage stands right of
// every stage it depends on.
func stageColumns(stages []*client.RunStage) []stageColumn {
	depth := map[string]int{}
	byName := map[string]*client.RunStage{}
	for _, st := range stages {
		byName[st.Name] = st
	}
	var level func(st *client.RunStage, seen map[string]bool) int
	level = func(st *client.RunStage, seen map[string]bool) int {
		if d, ok := depth[st.Name]; ok {
			return d
		}
		if seen[st.Name] {
			return 0
		}
		seen[st.Name] = true
		d := 0
		for _, dep := range st.Depends {
			if o, ok := byName[dep]; ok {
				if l := level(o, seen) + 1; l > d {
					d = l
				}
			}
		}
		depth[st.Name] = d
		return d
	}
	var cols []stageColumn
	for _, st := range stages {
		d := level(st, map[string]bool{})
		for len(cols) <= d {
			cols = append(cols, stageColumn{})
		}
		cols[d].Stages = append(cols[d].Stages, st)
	}
	return cols
}

func (h *Handler) runPage(w http.ResponseWriter, r *http.Request, s *session) error {
	id := r.PathValue("id")
	run, err := h.api(s).GetRun(r.Context(), id)
	if err != nil {
		return notFoundAs(err, "run", id)
	}
	d := &runData{CSRF: s.CSRF, Run: run, Columns: stageColumns(run.Stages), Active: run.Phase == "queued" || run.Phase == "running"}
	h.renderView(w, r, "run", http.StatusOK, &view{Title: "Run " + run.ID, Session: s, Data: d, Refresh: d.Active})
	return nil
}

func (h *Handler) cancelRun(w http.ResponseWriter, r *http.Request, s *session) error {
	id := r.PathValue("id")
	if err := h.api(s).CancelRun(r.Context(), id); err != nil {
		return notFoundAs(err, "run", id)
	}
	return redirect(w, r, Prefix+"runs/"+url.PathEscape(id))
}

func (h *Handler) approveStage(w http.ResponseWriter, r *http.Request, s *session) error {
	id, name := r.PathValue("id"), r.PathValue("name")
	if err := h.api(s).ApproveRun(r.Context(), id, name, s.Principal.Name); err != nil {
		return notFoundAs(err, "run", id)
	}
	return redirect(w, r, Prefix+"runs/"+url.PathEscape(id))
}

type tasksData struct {
	State  string
	States []errand.State
	Tasks  []*client.Task
	Next   string
}

func (h *Handler) tasksPage(w http.ResponseWriter, r *http.Request, s *session) error {
	q := r.URL.Query()
	f := &client.TaskFilter{Order: client.OrderDesc, Limit: 100, After: q.Get("after"), RunID: q.Get("run")}
	state := q.Get("state")
	if state != "" {
		f.States = []errand.State{errand.State(state)}
	}
	list, err := h.api(s).ListTasks(r.Context(), f)
	if err != nil {
		return fmt.Errorf("list tasks: %w", err)
	}
	d := &tasksData{State: state, Tasks: list.Items, Next: list.Next, States: []errand.State{
		errand.StatePending, errand.StateQueued, errand.StateLeased, errand.StateRunning, errand.StateSucceeded,
		errand.StateFailed, errand.StateCancelled, errand.StateSkipped, errand.StateTimedOut}}
	h.renderView(w, r, "tasks", http.StatusOK, &view{Title: "Tasks", Session: s, Data: d, Refresh: true})
	return nil
}

type taskData struct {
	CSRF string
	Task *client.Task
}

func (h *Handler) taskPage(w http.ResponseWriter, r *http.Request, s *session) error {
	id := r.PathValue("id")
	t, err := h.api(s).GetTask(r.Context(), id)
	if err != nil {
		return notFoundAs(err, "task", id)
	}
	h.render(w, r, s, "task", http.StatusOK, "Task "+t.ID, &taskData{CSRF: s.CSRF, Task: t})
	return nil
}

func (h *Handler) cancelTask(w http.ResponseWriter, r *http.Request, s *session) error {
	id := r.PathValue("id")
	if err := h.api(s).CancelTask(r.Context(), id); err != nil {
		return notFoundAs(err, "task", id)
	}
	return redirect(w, r, Prefix+"tasks/"+url.PathEscape(id))
}

// taskLogs serves the log to the log viewer: the API's pages, event
// stream and raw text, called on behalf of the session.
func (h *Handler) taskLogs(w http.ResponseWriter, r *http.Request, s *session) error {
	h.proxyLog(w, r, s, r.Header.Get("Accept"))
	return nil
}

func (h *Handler) rawLog(w http.ResponseWriter, r *http.Request, s *session) error {
	if r.URL.Query().Get("download") != "" {
		w.Header().Set("Content-Disposition", `attachment; filename="task-`+safeFileName(r.PathValue("id"))+`.log"`)
	}
	r.URL.RawQuery = ""
	h.proxyLog(w, r, s, "text/plain")
	return nil
}

// proxyLog serves GET /api/v1/tasks/{id}/logs in-process on w, so that a
// stream flows through as it is written.
func (h *Handler) proxyLog(w http.ResponseWriter, r *http.Request, s *session, accept string) {
	ctx := r.Context()
	if h.cfg.APIContext != nil {
		ctx = h.cfg.APIContext(ctx, s.Principal)
	}
	in := r.Clone(ctx)
	in.URL.Path = "/api/v1/tasks/" + url.PathEscape(r.PathValue("id")) + "/logs"
	in.URL.RawPath = ""
	in.RequestURI = in.URL.RequestURI()
	in.Header = http.Header{}
	for _, k := range []string{"Last-Event-ID", "Range", "If-Range"} {
		if v := r.Header.Get(k); v != "" {
			in.Header.Set(k, v)
		}
	}
	if accept != "" {
		in.Header.Set("Accept", accept)
	}
	in.Header.Set("Authorization", "Bearer "+h.cfg.APIToken(s.Principal))
	h.cfg.API.ServeHTTP(w, in)
}

type delegatesData struct {
	CSRF      string
	Delegates []*client.Delegate
	// Running counts the leased and running tasks of each delegate;
	// RunningMore says there were more than one list page holds.
	Running     map[string]int
	RunningMore bool
}

func (h *Handler) delegatesPage(w http.ResponseWriter, r *http.Request, s *session) error {
	list, err := h.api(s).ListDelegates(r.Context())
	if err != nil {
		return fmt.Errorf("list delegates: %w", err)
	}
	ds := list.Items
	sort.SliceStable(ds, func(i, j int) bool { return ds[i].Name < ds[j].Name })
	busy, err := h.api(s).ListTasks(r.Context(), &client.TaskFilter{States: []errand.State{errand.StateLeased, errand.StateRunning}, Limit: 1000})
	if err != nil {
		return fmt.Errorf("list running tasks: %w", err)
	}
	d := &delegatesData{CSRF: s.CSRF, Delegates: ds, Running: map[string]int{}, RunningMore: busy.Next != ""}
	for _, t := range busy.Items {
		d.Running[t.DelegateID]++
	}
	h.renderView(w, r, "delegates", http.StatusOK, &view{Title: "Delegates", Session: s, Data: d, Refresh: true})
	return nil
}

func (h *Handler) drainDelegate(w http.ResponseWriter, r *http.Request, s *session) error {
	id := r.PathValue("id")
	if err := h.api(s).DrainDelegate(r.Context(), id); err != nil {
		return notFoundAs(err, "delegate", id)
	}
	return redirect(w, r, Prefix+"delegates")
}

// safeFileName keeps the letters, digits, dashes and underscores of id.
func safeFileName(id string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return -1
	}, id)
}
