package storetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"sync"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

func (h *harness) createPipeline(name string) *store.Pipeline {
	h.t.Helper()
	p, err := h.s.PipelineCreate(h.ctx, store.PipelineCreateParams{Pipeline: &store.Pipeline{Name: name, Spec: json.RawMessage(`{"config":"stages: []"}`), CreatedBy: "alice"}, Now: h.now})
	if err != nil {
		h.t.Fatalf("PipelineCreate %s: %v", name, err)
	}
	return p
}

// numbered creates a run of pipeline with a user trigger and returns its
// number.
func (h *harness) numbered(id, pipeline string) int64 {
	h.t.Helper()
	r := &store.Run{ID: id, Filename: "config.yml", Origin: &store.RunOrigin{Pipeline: pipeline, Trigger: store.RunTrigger{Kind: "user", Who: "alice"}}}
	h.createRun(r)
	return r.Origin.Number
}

// testPipelines: a pipeline is created once by name, read, listed in
// name order (by prefix, in pages), updated in place and deleted.
func testPipelines(h *harness) {
	t, s := h.t, h.s
	for _, name := range []string{"", "Api", "a b", "../x", string(make([]byte, store.MaxPipelineName+1))} {
		_, err := s.PipelineCreate(h.ctx, store.PipelineCreateParams{Pipeline: &store.Pipeline{Name: name, Spec: json.RawMessage(`{}`)}, Now: h.now})
		if !errors.Is(err, errand.ErrInvalid) {
			t.Errorf("PipelineCreate %q = %v, want invalid", name, err)
		}
	}
	if _, err := s.PipelineCreate(h.ctx, store.PipelineCreateParams{Pipeline: &store.Pipeline{Name: "x", Spec: json.RawMessage(`{`)}, Now: h.now}); !errors.Is(err, errand.ErrInvalid) {
		t.Errorf("PipelineCreate with a spec that is not JSON = %v, want invalid", err)
	}
	api := h.createPipeline("api")
	if api.Name != "api" || api.CreatedBy != "alice" || !api.CreatedAt.Equal(h.now) || !api.UpdatedAt.Equal(h.now) || api.LastNumber != 0 {
		t.Errorf("created %+v", api)
	}
	if _, err := s.PipelineCreate(h.ctx, store.PipelineCreateParams{Pipeline: &store.Pipeline{Name: "api", Spec: json.RawMessage(`{}`)}, Now: h.now}); !errors.Is(err, errand.ErrConflict) {
		t.Errorf("second PipelineCreate api = %v, want conflict", err)
	}
	h.createPipeline("api-v2")
	h.createPipeline("web")
	h.createPipeline("apx")
	list := func(p store.PipelineListParams) []string {
		t.Helper()
		got, err := s.PipelineList(h.ctx, p)
		if err != nil {
			t.Fatalf("PipelineList %+v: %v", p, err)
		}
		out := []string{}
		for _, pl := range got {
			out = append(out, pl.Name)
		}
		return out
	}
	for _, c := range []struct {
		p    store.PipelineListParams
		want []string
	}{
		{store.PipelineListParams{}, []string{"api", "api-v2", "apx", "web"}},
		{store.PipelineListParams{Prefix: "api"}, []string{"api", "api-v2"}},
		{store.PipelineListParams{Prefix: "api_"}, []string{}},
		{store.PipelineListParams{Limit: 2}, []string{"api", "api-v2"}},
		{store.PipelineListParams{After: "api-v2", Limit: 2}, []string{"apx", "web"}},
	} {
		if got := list(c.p); !sameStrings(got, c.want) {
			t.Errorf("PipelineList %+v = %v, want %v", c.p, got, c.want)
		}
	}
	h.tick(time.Minute)
	up, err := s.PipelineUpdate(h.ctx, store.PipelineUpdateParams{Name: "api", Spec: json.RawMessage(`{"config":"v2"}`), Now: h.now})
	if err != nil || !up.UpdatedAt.Equal(h.now) || !up.CreatedAt.Equal(t0) || up.CreatedBy != "alice" {
		t.Fatalf("PipelineUpdate = %+v, %v", up, err)
	}
	got, err := s.PipelineGet(h.ctx, "api")
	if err != nil || string(got.Spec) != `{"config":"v2"}` {
		t.Fatalf("PipelineGet after update = %+v, %v", got, err)
	}
	if _, err := s.PipelineUpdate(h.ctx, store.PipelineUpdateParams{Name: "nope", Spec: json.RawMessage(`{}`), Now: h.now}); !errors.Is(err, errand.ErrNotFound) {
		t.Errorf("PipelineUpdate nope = %v, want not found", err)
	}
	if err := s.PipelineDelete(h.ctx, "web"); err != nil {
		t.Fatalf("PipelineDelete: %v", err)
	}
	if err := s.PipelineDelete(h.ctx, "web"); !errors.Is(err, errand.ErrNotFound) {
		t.Errorf("second PipelineDelete = %v, want not found", err)
	}
	if _, err := s.PipelineGet(h.ctx, "web"); !errors.Is(err, errand.ErrNotFound) {
		t.Errorf("PipelineGet of a deleted pipeline = %v, want not found", err)
	}
}

// testPipelineRunNumbers: runs of a pipeline are numbered 1, 2, 3… as
// they are created, each pipeline on its own; a run keeps its origin;
// a run of an unknown pipeline is refused whole; a pipeline made again
// after a delete goes on from its highest number.
func testPipelineRunNumbers(h *harness) {
	t, s := h.t, h.s
	h.createPipeline("api")
	h.createPipeline("web")
	for i, want := range []int64{1, 2, 3} {
		if n := h.numbered(fmt.Sprintf("api-%d", i+1), "api"); n != want {
			t.Fatalf("run %d of api has number %d, want %d", i+1, n, want)
		}
	}
	if n := h.numbered("web-1", "web"); n != 1 {
		t.Fatalf("first run of web has number %d, want 1", n)
	}
	adhoc := &store.Run{ID: "adhoc", Filename: "config.yml", Origin: &store.RunOrigin{Trigger: store.RunTrigger{Kind: "user", Who: "bob"},
		Variables: map[string]string{"A": "1"}, ExtStr: map[string]string{"e": "x"}}}
	h.createRun(adhoc)
	if adhoc.Origin.Number != 0 {
		t.Errorf("a run of no pipeline has number %d", adhoc.Origin.Number)
	}
	got := h.getRun("adhoc")
	if got.Origin == nil || got.Origin.Pipeline != "" || got.Origin.Trigger.Who != "bob" ||
		!reflect.DeepEqual(got.Origin.Variables, map[string]string{"A": "1"}) || !reflect.DeepEqual(got.Origin.ExtStr, map[string]string{"e": "x"}) {
		t.Errorf("origin of adhoc = %+v", got.Origin)
	}
	h.createRun(&store.Run{ID: "plain", Filename: "config.yml"})
	if r := h.getRun("plain"); r.Origin != nil {
		t.Errorf("a run made without an origin has %+v", r.Origin)
	}

	trig := store.RunTrigger{Kind: "webhook", Who: "github", Event: "push", Commit: "abc123", Ref: "refs/heads/main", Author: "Ann", Message: "fix it"}
	r := &store.Run{ID: "api-4", Filename: "config.yml", Origin: &store.RunOrigin{Pipeline: "api", Trigger: trig,
		Variables: map[string]string{"TARGET": "prod"}, RestartOf: "api-3", RestartFrom: "failed"}}
	h.createRun(r)
	got = h.getRun("api-4")
	want := &store.RunOrigin{Pipeline: "api", Number: 4, Trigger: trig, Variables: map[string]string{"TARGET": "prod"}, RestartOf: "api-3", RestartFrom: "failed"}
	if !reflect.DeepEqual(got.Origin, want) {
		t.Errorf("origin of api-4 = %+v, want %+v", got.Origin, want)
	}
	if id, err := s.PipelineRunID(h.ctx, "api", 2); err != nil || id != "api-2" {
		t.Errorf("PipelineRunID api 2 = %q, %v", id, err)
	}
	if _, err := s.PipelineRunID(h.ctx, "api", 9); !errors.Is(err, errand.ErrNotFound) {
		t.Errorf("PipelineRunID api 9 = %v, want not found", err)
	}
	listRuns := func(p store.PipelineRunListParams) []string {
		t.Helper()
		runs, err := s.PipelineRunList(h.ctx, p)
		if err != nil {
			t.Fatalf("PipelineRunList %+v: %v", p, err)
		}
		out := []string{}
		for _, r := range runs {
			if r.Origin == nil || r.Origin.Pipeline != p.Pipeline {
				t.Fatalf("listed run %s has origin %+v", r.ID, r.Origin)
			}
			if len(r.Config) != 0 || len(r.Plan) != 0 {
				t.Fatalf("listed run %s has its config or plan", r.ID)
			}
			out = append(out, r.ID)
		}
		return out
	}
	for _, c := range []struct {
		p    store.PipelineRunListParams
		want []string
	}{
		{store.PipelineRunListParams{Pipeline: "api"}, []string{"api-4", "api-3", "api-2", "api-1"}},
		{store.PipelineRunListParams{Pipeline: "api", Limit: 2}, []string{"api-4", "api-3"}},
		{store.PipelineRunListParams{Pipeline: "api", Before: 3, Limit: 2}, []string{"api-2", "api-1"}},
		{store.PipelineRunListParams{Pipeline: "api", TriggerKind: "webhook"}, []string{"api-4"}},
		{store.PipelineRunListParams{Pipeline: "api", Ref: "refs/heads/main", Commit: "abc123"}, []string{"api-4"}},
		{store.PipelineRunListParams{Pipeline: "api", Commit: "nope"}, []string{}},
		{store.PipelineRunListParams{Pipeline: "web"}, []string{"web-1"}},
		{store.PipelineRunListParams{Pipeline: ""}, []string{}},
	} {
		if got := listRuns(c.p); !sameStrings(got, c.want) {
			t.Errorf("PipelineRunList %+v = %v, want %v", c.p, got, c.want)
		}
	}
	if p, err := s.PipelineGet(h.ctx, "api"); err != nil || p.LastNumber != 4 {
		t.Errorf("PipelineGet api = %+v, %v: want last number 4", p, err)
	}

	// A run of an unknown pipeline is refused, with its tasks.
	_, err := s.RunCreate(h.ctx, store.RunCreateParams{Run: &store.Run{ID: "lost", Filename: "config.yml",
		Origin: &store.RunOrigin{Pipeline: "nope", Trigger: store.RunTrigger{Kind: "user"}}}, Tasks: []*errand.Task{task("lost-t")}, Now: h.now})
	wantCode(t, "RunCreate of an unknown pipeline", err, errand.ErrNotFound)
	if _, err := s.RunGet(h.ctx, "lost"); !errors.Is(err, errand.ErrNotFound) {
		t.Errorf("the refused run is stored: %v", err)
	}
	if _, err := s.TaskGet(h.ctx, "lost-t"); !errors.Is(err, errand.ErrNotFound) {
		t.Errorf("a task of the refused run is stored: %v", err)
	}
	_, err = s.RunCreate(h.ctx, store.RunCreateParams{Run: &store.Run{ID: "nokind", Origin: &store.RunOrigin{Pipeline: "api"}}, Now: h.now})
	wantCode(t, "RunCreate with no trigger kind", err, errand.ErrInvalid)
	// A run refused for another reason gives its number back.
	_, err = s.RunCreate(h.ctx, store.RunCreateParams{Run: &store.Run{ID: "api-1", Origin: &store.RunOrigin{Pipeline: "api", Trigger: store.RunTrigger{Kind: "user"}}}, Now: h.now})
	wantCode(t, "RunCreate with an id that exists", err, errand.ErrConflict)
	if n := h.numbered("api-5", "api"); n != 5 {
		t.Errorf("the run after a refused one has number %d, want 5", n)
	}

	// Deleting a pipeline keeps its runs; making it again goes on.
	if err := s.PipelineDelete(h.ctx, "api"); err != nil {
		t.Fatalf("PipelineDelete: %v", err)
	}
	if id, err := s.PipelineRunID(h.ctx, "api", 5); err != nil || id != "api-5" {
		t.Errorf("PipelineRunID of a deleted pipeline's run = %q, %v", id, err)
	}
	_, err = s.RunCreate(h.ctx, store.RunCreateParams{Run: &store.Run{ID: "gone", Origin: &store.RunOrigin{Pipeline: "api", Trigger: store.RunTrigger{Kind: "user"}}}, Now: h.now})
	wantCode(t, "RunCreate of a deleted pipeline", err, errand.ErrNotFound)
	if p := h.createPipeline("api"); p.LastNumber != 5 {
		t.Errorf("api made again has last number %d, want 5", p.LastNumber)
	}
	if n := h.numbered("api-6", "api"); n != 6 {
		t.Errorf("first run of api made again has number %d, want 6", n)
	}
}

// testPipelineRunNumbersConcurrent: runs created at once take every
// number once.
func testPipelineRunNumbersConcurrent(h *harness) {
	h.createPipeline("api")
	const n = 30
	numbers := make([]int64, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &store.Run{ID: fmt.Sprintf("c%02d", i), Filename: "config.yml", Origin: &store.RunOrigin{Pipeline: "api", Trigger: store.RunTrigger{Kind: "user"}}}
			_, errs[i] = h.s.RunCreate(h.ctx, store.RunCreateParams{Run: r, Tasks: []*errand.Task{task(r.ID + "-t")}, Now: h.now})
			numbers[i] = r.Origin.Number
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			h.t.Fatalf("RunCreate %d: %v", i, err)
		}
	}
	sort.Slice(numbers, func(i, j int) bool { return numbers[i] < numbers[j] })
	for i, got := range numbers {
		if got != int64(i+1) {
			h.t.Fatalf("numbers taken = %v, want 1..%d once each", numbers, n)
		}
	}
}

// testRunUses: a run that uses another run's tasks may depend on those
// that ended, and only those; the used run knows who uses it.
func testRunUses(h *harness) {
	t, s := h.t, h.s
	h.createRun(&store.Run{ID: "orig", Filename: "config.yml"},
		task("o-build"), task("o-test", dep("o-build", errand.OnSuccess)))
	d := h.register("d1")
	h.run(d, "o-build", errand.StateSucceeded)
	origin := func() *store.RunOrigin {
		return &store.RunOrigin{Trigger: store.RunTrigger{Kind: "restart", Who: "alice"}, RestartOf: "orig", RestartFrom: "failed", Uses: []string{"orig"}}
	}
	// o-test has not ended: nothing may wait on it across runs.
	_, err := s.RunCreate(h.ctx, store.RunCreateParams{Run: &store.Run{ID: "early", Origin: origin()},
		Tasks: []*errand.Task{task("e-test", dep("o-test", errand.OnSuccess))}, Now: h.now})
	wantCode(t, "RunCreate depending on a task that has not ended", err, errand.ErrInvalid)
	// Without Uses, another run's task is refused as before.
	_, err = s.RunCreate(h.ctx, store.RunCreateParams{Run: &store.Run{ID: "nouse", Origin: &store.RunOrigin{Trigger: store.RunTrigger{Kind: "user"}}},
		Tasks: []*errand.Task{task("n-test", dep("o-build", errand.OnSuccess))}, Now: h.now})
	wantCode(t, "RunCreate depending on another run without using it", err, errand.ErrInvalid)
	h.run(d, "o-test", errand.StateFailed)
	h.createRun(&store.Run{ID: "other", Filename: "config.yml"}, task("x-1"))
	h.run(d, "x-1", errand.StateSucceeded)
	_, err = s.RunCreate(h.ctx, store.RunCreateParams{Run: &store.Run{ID: "wrong", Origin: origin()},
		Tasks: []*errand.Task{task("w-test", dep("x-1", errand.OnSuccess))}, Now: h.now})
	wantCode(t, "RunCreate depending on a run it does not use", err, errand.ErrInvalid)

	out := h.createRun(&store.Run{ID: "again", Filename: "config.yml", Origin: origin()},
		task("a-test", dep("o-build", errand.OnSuccess)), task("a-skip", dep("o-build", errand.OnFailure)),
		task("a-report", dep("o-test", errand.OnFailure)))
	if out[0].State != errand.StateQueued || out[1].State != errand.StateSkipped || out[2].State != errand.StateQueued {
		t.Fatalf("states = %s, %s, %s; want queued (o-build succeeded), skipped (it did not fail), queued (o-test failed)", out[0].State, out[1].State, out[2].State)
	}
	if got := h.getRun("again"); !sameStrings(got.Origin.Uses, []string{"orig"}) || got.Origin.RestartOf != "orig" {
		t.Errorf("origin of again = %+v", got.Origin)
	}
	users, err := s.RunUsers(h.ctx, "orig")
	if err != nil || !sameStrings(users, []string{"again"}) {
		t.Errorf("RunUsers orig = %v, %v; want [again]", users, err)
	}
	if users, err := s.RunUsers(h.ctx, "other"); err != nil || len(users) != 0 {
		t.Errorf("RunUsers other = %v, %v; want none", users, err)
	}
}
