package storetest

import (
	"errors"
	"fmt"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

// artifact returns an artifact of task in run at path, of size bytes.
func (h *harness) artifact(id, run, task, path string, size int64, expires time.Duration) *store.Artifact {
	return &store.Artifact{ID: id, RunID: run, TaskID: task, Stage: "build", Step: "compile", Path: path, Size: size,
		SHA256: fmt.Sprintf("%064x", size), ContentType: "text/plain", Mode: 0o644,
		Object: store.ArtifactKeyPrefix + run + "/" + task + "/u/" + path, CreatedAt: h.now, ExpiresAt: h.now.Add(expires)}
}

func artifactPaths(list []*store.Artifact) []string {
	out := []string{}
	for _, a := range list {
		out = append(out, a.TaskID+":"+a.Path)
	}
	return out
}

// testArtifacts: an upload's artifacts are committed together, replace
// the task's earlier ones, are listed in upload order and found by task
// and path; a run's bytes are bounded in the commit.
func testArtifacts(h *harness) {
	t, s := h.t, h.s
	commit := func(run, task string, max int64, as ...*store.Artifact) ([]*store.Artifact, error) {
		return s.ArtifactsCommit(h.ctx, store.ArtifactsCommitParams{RunID: run, TaskID: task, Artifacts: as, MaxRunBytes: max})
	}
	day := 24 * time.Hour
	a1 := h.artifact("01A1", "r1", "t1", "dist/app", 100, day)
	a2 := h.artifact("01A2", "r1", "t1", "dist/app.sha", 10, day)
	link := h.artifact("01A3", "r1", "t1", "dist/latest", 0, day)
	link.LinkTarget, link.Object, link.SHA256 = "app", "", ""
	if replaced, err := commit("r1", "t1", 0, a1, a2, link); err != nil || len(replaced) != 0 {
		t.Fatalf("ArtifactsCommit = %v, %v", replaced, err)
	}
	got, err := s.ArtifactGet(h.ctx, "t1", "dist/app")
	if err != nil {
		t.Fatal(err)
	}
	if *got != *a1 {
		t.Errorf("ArtifactGet = %+v, want %+v", got, a1)
	}
	if got, err := s.ArtifactGet(h.ctx, "t1", "dist/latest"); err != nil || got.LinkTarget != "app" || got.Object != "" {
		t.Errorf("ArtifactGet of the link = %+v, %v", got, err)
	}
	if _, err := s.ArtifactGet(h.ctx, "t1", "dist/none"); !errors.Is(err, errand.ErrNotFound) {
		t.Errorf("ArtifactGet of a missing path = %v, want not found", err)
	}
	b1 := h.artifact("01B1", "r1", "t2", "report.xml", 50, day)
	b1.Stage, b1.Step = "test", ""
	if _, err := commit("r1", "t2", 0, b1); err != nil {
		t.Fatal(err)
	}
	if _, err := commit("r2", "t3", 0, h.artifact("01C1", "r2", "t3", "x", 1, time.Hour)); err != nil {
		t.Fatal(err)
	}
	list, err := s.ArtifactList(h.ctx, store.ArtifactListParams{RunID: "r1"})
	if err != nil || fmt.Sprint(artifactPaths(list)) != "[t1:dist/app t1:dist/app.sha t1:dist/latest t2:report.xml]" {
		t.Errorf("ArtifactList r1 = %v, %v", artifactPaths(list), err)
	}
	list, err = s.ArtifactList(h.ctx, store.ArtifactListParams{RunID: "r1", Stage: "test"})
	if err != nil || fmt.Sprint(artifactPaths(list)) != "[t2:report.xml]" {
		t.Errorf("ArtifactList r1 stage test = %v, %v", artifactPaths(list), err)
	}
	list, err = s.ArtifactList(h.ctx, store.ArtifactListParams{RunID: "r1", TaskID: "t1", After: "01A1", Limit: 1})
	if err != nil || fmt.Sprint(artifactPaths(list)) != "[t1:dist/app.sha]" {
		t.Errorf("ArtifactList r1 t1 after 01A1 limit 1 = %v, %v", artifactPaths(list), err)
	}
	if _, err := s.ArtifactList(h.ctx, store.ArtifactListParams{}); !errors.Is(err, errand.ErrInvalid) {
		t.Errorf("ArtifactList without a run = %v, want invalid", err)
	}
	if n, err := s.ArtifactRunBytes(h.ctx, "r1"); err != nil || n != 160 {
		t.Errorf("ArtifactRunBytes r1 = %d, %v; want 160", n, err)
	}

	// A second upload of t1 replaces the first, and must fit the run's
	// bound with the other tasks' artifacts.
	a4 := h.artifact("01D1", "r1", "t1", "dist/app", 200, day)
	if _, err := commit("r1", "t1", 249, a4); !errors.Is(err, errand.ErrTooLarge) {
		t.Errorf("commit past the run's bound = %v, want too large", err)
	}
	if list, _ := s.ArtifactList(h.ctx, store.ArtifactListParams{RunID: "r1", TaskID: "t1"}); len(list) != 3 {
		t.Errorf("a refused commit changed the task's artifacts: %v", artifactPaths(list))
	}
	replaced, err := commit("r1", "t1", 250, a4)
	if err != nil || fmt.Sprint(artifactPaths(replaced)) != "[t1:dist/app t1:dist/app.sha t1:dist/latest]" {
		t.Fatalf("replacing commit = %v, %v", artifactPaths(replaced), err)
	}
	if got, err := s.ArtifactGet(h.ctx, "t1", "dist/app"); err != nil || got.ID != "01D1" || got.Size != 200 {
		t.Errorf("after the replacing commit ArtifactGet = %+v, %v", got, err)
	}
	if u, err := s.ArtifactUsage(h.ctx); err != nil || u.Count != 3 || u.Bytes != 251 {
		t.Errorf("ArtifactUsage = %+v, %v; want 3 artifacts, 251 bytes", u, err)
	}

	for _, bad := range []store.ArtifactsCommitParams{
		{RunID: "r1"},
		{RunID: "r1", TaskID: "t1", Artifacts: []*store.Artifact{nil}},
		{RunID: "r1", TaskID: "t1", Artifacts: []*store.Artifact{h.artifact("x", "r2", "t1", "p", 1, day)}},
		{RunID: "r1", TaskID: "t1", Artifacts: []*store.Artifact{h.artifact("x", "r1", "t1", "p", 1, day), h.artifact("y", "r1", "t1", "p", 1, day)}},
	} {
		if _, err := s.ArtifactsCommit(h.ctx, bad); !errors.Is(err, errand.ErrInvalid) {
			t.Errorf("ArtifactsCommit %+v = %v, want invalid", bad, err)
		}
	}
}

// testArtifactRetention: expired artifacts are listed soonest first and
// deleted by id or by run.
func testArtifactRetention(h *harness) {
	t, s := h.t, h.s
	for _, c := range []struct {
		id, run, task, path string
		expires             time.Duration
	}{
		{"01A", "r1", "t1", "a", 3 * time.Hour},
		{"01B", "r1", "t4", "b", time.Hour},
		{"01C", "r1", "t2", "c", 2 * time.Hour},
		{"01D", "r2", "t3", "d", 10 * time.Hour},
	} {
		if _, err := s.ArtifactsCommit(h.ctx, store.ArtifactsCommitParams{RunID: c.run, TaskID: c.task,
			Artifacts: []*store.Artifact{h.artifact(c.id, c.run, c.task, c.path, 1, c.expires)}}); err != nil {
			t.Fatal(err)
		}
	}
	if list, err := s.ArtifactListExpired(h.ctx, h.now.Add(30*time.Minute), 10); err != nil || len(list) != 0 {
		t.Errorf("expired before any = %v, %v", artifactPaths(list), err)
	}
	list, err := s.ArtifactListExpired(h.ctx, h.now.Add(3*time.Hour), 10)
	if err != nil || fmt.Sprint(artifactPaths(list)) != "[t4:b t2:c t1:a]" {
		t.Errorf("expired at +3h = %v, %v; want soonest first", artifactPaths(list), err)
	}
	if list, _ := s.ArtifactListExpired(h.ctx, h.now.Add(3*time.Hour), 1); fmt.Sprint(artifactPaths(list)) != "[t4:b]" {
		t.Errorf("expired at +3h, limit 1 = %v", artifactPaths(list))
	}
	deleted, err := s.ArtifactDelete(h.ctx, []string{"01B", "nope"})
	if err != nil || fmt.Sprint(artifactPaths(deleted)) != "[t4:b]" {
		t.Errorf("ArtifactDelete = %v, %v", artifactPaths(deleted), err)
	}
	if _, err := s.ArtifactGet(h.ctx, "t4", "b"); !errors.Is(err, errand.ErrNotFound) {
		t.Errorf("deleted artifact still found: %v", err)
	}
	deleted, err = s.ArtifactDeleteRun(h.ctx, "r1")
	if err != nil || fmt.Sprint(artifactPaths(deleted)) != "[t1:a t2:c]" {
		t.Errorf("ArtifactDeleteRun r1 = %v, %v", artifactPaths(deleted), err)
	}
	if list, _ := s.ArtifactList(h.ctx, store.ArtifactListParams{RunID: "r1"}); len(list) != 0 {
		t.Errorf("run r1 still lists %v", artifactPaths(list))
	}
	if u, err := s.ArtifactUsage(h.ctx); err != nil || u.Count != 1 || u.Bytes != 1 {
		t.Errorf("usage after deletes = %+v, %v", u, err)
	}
}
