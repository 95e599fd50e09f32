package storetest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

// sealed seals an ended task's log into one object named after it.
func (h *harness) sealed(id string, size int64) string {
	h.t.Helper()
	key := "logs/" + id + "/0"
	if err := h.s.LogSeal(h.ctx, store.LogSealParams{TaskID: id, Objects: []store.LogObject{{Key: key, Lines: 1, Size: size}}}); err != nil {
		h.t.Fatalf("LogSeal %s: %v", id, err)
	}
	return key
}

func (h *harness) commitArtifact(a *store.Artifact) {
	h.t.Helper()
	if _, err := h.s.ArtifactsCommit(h.ctx, store.ArtifactsCommitParams{RunID: a.RunID, TaskID: a.TaskID, Artifacts: []*store.Artifact{a}}); err != nil {
		h.t.Fatalf("ArtifactsCommit: %v", err)
	}
}

func (h *harness) pendingDeletions() []string {
	h.t.Helper()
	list, err := h.s.ObjectDeletionList(h.ctx, h.now, 1000)
	if err != nil {
		h.t.Fatalf("ObjectDeletionList: %v", err)
	}
	out := []string{}
	for _, d := range list {
		out = append(out, d.Kind+":"+d.Key)
	}
	slices.Sort(out)
	return out
}

// testRunDelete: a run that has not ended is refused; deleting an
// original that a restart uses keeps the tasks, logs and artifacts the
// restart shows, and deleting the restart then removes both runs'
// records and queues every object they named.
func testRunDelete(h *harness) {
	t, s := h.t, h.s
	del := func(id string) (*store.RunDeleteResult, error) {
		return s.RunDelete(h.ctx, store.RunDeleteParams{RunID: id, Now: h.now})
	}
	_, err := del("nope")
	wantCode(t, "RunDelete of an unknown run", err, errand.ErrNotFound)

	h.createRun(&store.Run{ID: "orig", Filename: "config.yml"},
		task("o-build"), task("o-test", dep("o-build", errand.OnSuccess)))
	d := h.register("d1")
	h.run(d, "o-build", errand.StateSucceeded)
	_, err = del("orig")
	wantCode(t, "RunDelete of a run that has not ended", err, errand.ErrConflict)
	if _, err := s.RunGet(h.ctx, "orig"); err != nil {
		t.Fatalf("RunGet after a refused delete: %v", err)
	}
	h.run(d, "o-test", errand.StateFailed)
	buildLog, testLog := h.sealed("o-build", 10), h.sealed("o-test", 20)
	shared := h.artifact("01S", "orig", "o-build", "dist/app", 100, time.Hour)
	own := h.artifact("01O", "orig", "o-test", "report.txt", 5, time.Hour)
	h.commitArtifact(shared)
	h.commitArtifact(own)
	if _, err := s.RunApprove(h.ctx, store.RunApproveParams{RunID: "orig", Stage: "deploy", Approver: "alice", Now: h.now}); err != nil {
		t.Fatal(err)
	}
	h.createRun(&store.Run{ID: "again", Filename: "config.yml", Origin: &store.RunOrigin{Trigger: store.RunTrigger{Kind: "restart", Who: "alice"},
		RestartOf: "orig", RestartFrom: "failed", Uses: []string{"orig"}}},
		task("a-test", dep("o-build", errand.OnSuccess)))
	h.run(d, "a-test", errand.StateSucceeded)
	againLog := h.sealed("a-test", 30)

	res, err := del("orig")
	if err != nil {
		t.Fatalf("RunDelete orig: %v", err)
	}
	if res.Tasks != 0 || res.Kept != 2 || len(res.Objects) != 0 {
		t.Errorf("RunDelete orig = %+v; want nothing deleted, 2 tasks kept for again", res)
	}
	if _, err := s.RunGet(h.ctx, "orig"); !errors.Is(err, errand.ErrNotFound) {
		t.Errorf("RunGet orig after delete = %v; want not found", err)
	}
	if _, err := s.ArtifactGet(h.ctx, "o-build", "dist/app"); err != nil {
		t.Errorf("shared artifact after deleting orig: %v", err)
	}
	if objs, sealed, err := s.LogObjects(h.ctx, "o-build"); err != nil || !sealed || len(objs) != 1 {
		t.Errorf("shared log after deleting orig = %v, %v, %v", objs, sealed, err)
	}
	if got := h.pendingDeletions(); len(got) != 0 {
		t.Errorf("deletions queued after deleting orig = %v; want none", got)
	}
	_, err = del("orig")
	wantCode(t, "RunDelete twice", err, errand.ErrNotFound)

	res, err = del("again")
	if err != nil {
		t.Fatalf("RunDelete again: %v", err)
	}
	want := []string{againLog, buildLog, testLog, shared.Object, own.Object}
	slices.Sort(want)
	got := slices.Clone(res.Objects)
	slices.Sort(got)
	if res.Tasks != 3 || res.Kept != 0 || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("RunDelete again = %+v (objects %v); want 3 tasks and objects %v", res, got, want)
	}
	for _, id := range []string{"o-build", "o-test", "a-test"} {
		if _, err := s.TaskGet(h.ctx, id); !errors.Is(err, errand.ErrNotFound) {
			t.Errorf("TaskGet %s after both deletes = %v; want not found", id, err)
		}
	}
	if _, err := s.ArtifactGet(h.ctx, "o-build", "dist/app"); !errors.Is(err, errand.ErrNotFound) {
		t.Errorf("shared artifact after both deletes = %v; want not found", err)
	}
	wantPending := []string{"artifacts:" + own.Object, "artifacts:" + shared.Object, "logs:" + againLog, "logs:" + buildLog, "logs:" + testLog}
	slices.Sort(wantPending)
	if got := h.pendingDeletions(); fmt.Sprint(got) != fmt.Sprint(wantPending) {
		t.Errorf("queued deletions = %v; want %v", got, wantPending)
	}
	if err := s.ObjectDeletionDone(h.ctx, []string{buildLog, testLog, "nope"}); err != nil {
		t.Fatal(err)
	}
	if got := h.pendingDeletions(); len(got) != 3 {
		t.Errorf("queued deletions after two are done = %v", got)
	}
	if list, err := s.ObjectDeletionList(h.ctx, h.now.Add(-time.Second), 10); err != nil || len(list) != 0 {
		t.Errorf("deletions queued before now = %v, %v; want none", list, err)
	}
	// A run of no restart goes with its records at once.
	h.createRun(&store.Run{ID: "solo", Filename: "config.yml"}, task("s-1"))
	h.run(d, "s-1", errand.StateSucceeded)
	if res, err := del("solo"); err != nil || res.Tasks != 1 {
		t.Errorf("RunDelete solo = %+v, %v", res, err)
	}
}

// testArtifactExpire: expired artifact records are deleted, soonest
// first, and their objects queued; the others stay.
func testArtifactExpire(h *harness) {
	t, s := h.t, h.s
	h.commitArtifact(h.artifact("01A", "r1", "t1", "a", 1, time.Hour))
	h.commitArtifact(h.artifact("01B", "r1", "t2", "b", 1, 2*time.Hour))
	link := h.artifact("01C", "r1", "t3", "c", 0, time.Hour)
	link.LinkTarget, link.Object = "a", ""
	h.commitArtifact(link)
	h.tick(time.Hour)
	got, err := s.ArtifactExpire(h.ctx, h.now, 10)
	if err != nil || fmt.Sprint(artifactPaths(got)) != "[t1:a t3:c]" {
		t.Fatalf("ArtifactExpire = %v, %v; want [t1:a t3:c]", artifactPaths(got), err)
	}
	if _, err := s.ArtifactGet(h.ctx, "t1", "a"); !errors.Is(err, errand.ErrNotFound) {
		t.Errorf("expired artifact = %v; want not found", err)
	}
	if _, err := s.ArtifactGet(h.ctx, "t2", "b"); err != nil {
		t.Errorf("artifact not yet expired: %v", err)
	}
	if got := h.pendingDeletions(); fmt.Sprint(got) != "[artifacts:artifacts/r1/t1/u/a]" {
		t.Errorf("queued deletions = %v", got)
	}
}

// testLocks: one holder at a time; a holder renews its own lock; an
// expired lock goes to whoever asks; a release frees only the holder's.
func testLocks(h *harness) {
	t, s := h.t, h.s
	take := func(holder string, ttl time.Duration) bool {
		t.Helper()
		ok, err := s.LockAcquire(h.ctx, store.LockParams{Name: "cleaner", Holder: holder, TTL: ttl, Now: h.now})
		if err != nil {
			t.Fatalf("LockAcquire %s: %v", holder, err)
		}
		return ok
	}
	if _, err := s.LockAcquire(h.ctx, store.LockParams{Name: "cleaner", Now: h.now}); !errors.Is(err, errand.ErrInvalid) {
		t.Errorf("LockAcquire with no holder = %v; want invalid", err)
	}
	if !take("a", time.Minute) {
		t.Fatal("a could not take a free lock")
	}
	if take("b", time.Minute) {
		t.Fatal("b took a lock a holds")
	}
	h.tick(50 * time.Second)
	if !take("a", time.Minute) {
		t.Fatal("a could not renew its lock")
	}
	h.tick(50 * time.Second)
	if take("b", time.Minute) {
		t.Fatal("b took a renewed lock before it expired")
	}
	if err := s.LockRelease(h.ctx, store.LockParams{Name: "cleaner", Holder: "b", Now: h.now}); err != nil {
		t.Fatal(err)
	}
	if take("b", time.Minute) {
		t.Fatal("b's release freed a's lock")
	}
	h.tick(time.Minute)
	if !take("b", time.Minute) {
		t.Fatal("b could not take an expired lock")
	}
	if err := s.LockRelease(h.ctx, store.LockParams{Name: "cleaner", Holder: "b", Now: h.now}); err != nil {
		t.Fatal(err)
	}
	// Many asking at once: exactly one gets it.
	var wg sync.WaitGroup
	var mu sync.Mutex
	won := 0
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := s.LockAcquire(h.ctx, store.LockParams{Name: "race", Holder: fmt.Sprint("h", i), TTL: time.Minute, Now: h.now})
			if err != nil {
				t.Errorf("LockAcquire: %v", err)
			}
			if ok {
				mu.Lock()
				won++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if won != 1 {
		t.Errorf("%d holders took one lock at once; want 1", won)
	}
}

// testStorageUsage: sealed logs and artifacts with an object are counted
// by kind.
func testStorageUsage(h *harness) {
	t, s := h.t, h.s
	h.createRun(&store.Run{ID: "r", Filename: "config.yml"}, task("t1"))
	h.run(h.register("d1"), "t1", errand.StateSucceeded)
	if err := s.LogSeal(h.ctx, store.LogSealParams{TaskID: "t1", Objects: []store.LogObject{{Key: "logs/t1/0", Lines: 2, Size: 7}, {Key: "logs/t1/1", Lines: 1, Size: 3}}}); err != nil {
		t.Fatal(err)
	}
	link := h.artifact("01B", "r", "t1", "b", 0, time.Hour)
	link.LinkTarget, link.Object = "a", ""
	if _, err := s.ArtifactsCommit(h.ctx, store.ArtifactsCommitParams{RunID: "r", TaskID: "t1",
		Artifacts: []*store.Artifact{h.artifact("01A", "r", "t1", "a", 40, time.Hour), link}}); err != nil {
		t.Fatal(err)
	}
	u, err := s.StorageUsage(h.ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := store.StorageUsage{store.KindLogs: {Objects: 2, Bytes: 10}, store.KindArtifacts: {Objects: 1, Bytes: 40}, store.KindCaches: {}}
	if fmt.Sprint(u) != fmt.Sprint(want) {
		t.Errorf("StorageUsage = %v; want %v", u, want)
	}
}
