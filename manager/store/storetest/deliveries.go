package storetest

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

// delivery returns a hook delivery of pipeline p in bucket b.
func (h *harness) delivery(id, p, b string, keep int, keys ...string) *store.Delivery {
	h.t.Helper()
	d, err := h.s.DeliveryCreate(h.ctx, store.DeliveryCreateParams{Delivery: &store.Delivery{ID: id, Pipeline: p, Kind: store.DeliveryHook,
		Bucket: b, Source: "github", Event: "push", HeaderEvent: "push", State: store.DeliveryPending, Body: []byte(`{"ref":"` + id + `"}`)},
		Now: h.now, Keep: keep, ReplayKeys: keys, ReplayWindow: time.Hour})
	if err != nil {
		h.t.Fatalf("DeliveryCreate %s: %v", id, err)
	}
	return d
}

func deliveryIDs(list []*store.Delivery) []string {
	out := []string{}
	for _, d := range list {
		out = append(out, d.ID)
	}
	return out
}

// testDeliveries: deliveries are created once, read with their body,
// listed newest first without it, paged, and kept in bounded buckets.
func testDeliveries(h *harness) {
	t, s := h.t, h.s
	for _, bad := range []*store.Delivery{nil, {ID: "x", Pipeline: "p", Kind: "other", State: store.DeliveryPending},
		{ID: "x", Pipeline: "p", Kind: store.DeliveryHook, State: "lost"}, {Pipeline: "p", Kind: store.DeliveryHook, State: store.DeliveryPending}} {
		if _, err := s.DeliveryCreate(h.ctx, store.DeliveryCreateParams{Delivery: bad, Now: h.now}); !errors.Is(err, errand.ErrInvalid) {
			t.Errorf("DeliveryCreate %+v = %v, want invalid", bad, err)
		}
	}
	a := h.delivery("01A", "p", "signed", 3)
	if a.State != store.DeliveryPending || !a.CreatedAt.Equal(h.now) || a.ReplayOf != "" {
		t.Errorf("created %+v", a)
	}
	if _, err := s.DeliveryCreate(h.ctx, store.DeliveryCreateParams{Delivery: &store.Delivery{ID: "01A", Pipeline: "p", Kind: store.DeliveryHook,
		State: store.DeliveryPending}, Now: h.now}); !errors.Is(err, errand.ErrConflict) {
		t.Errorf("second DeliveryCreate 01A = %v, want conflict", err)
	}
	got, err := s.DeliveryGet(h.ctx, "01A")
	if err != nil || string(got.Body) != `{"ref":"01A"}` || got.Source != "github" || got.Kind != store.DeliveryHook || got.Bucket != "signed" {
		t.Fatalf("DeliveryGet = %+v, %v", got, err)
	}
	if _, err := s.DeliveryGet(h.ctx, "nope"); !errors.Is(err, errand.ErrNotFound) {
		t.Errorf("DeliveryGet nope = %v, want not found", err)
	}
	h.tick(time.Second)
	for _, id := range []string{"01B", "01C", "01D"} {
		h.delivery(id, "p", "signed", 3)
	}
	for i := 0; i < 5; i++ {
		h.delivery(fmt.Sprintf("01E%d", i), "p", "unsigned", 2)
	}
	h.delivery("01F", "other", "signed", 3)
	list, err := s.DeliveryList(h.ctx, store.DeliveryListParams{Pipeline: "p"})
	if err != nil {
		t.Fatal(err)
	}
	want := "[01E4 01E3 01D 01C 01B]"
	if fmt.Sprint(deliveryIDs(list)) != want {
		t.Errorf("list = %v, want %s: each bucket keeps its own newest", deliveryIDs(list), want)
	}
	for _, d := range list {
		if d.Body != nil {
			t.Errorf("listed %s with its body", d.ID)
		}
	}
	page, err := s.DeliveryList(h.ctx, store.DeliveryListParams{Pipeline: "p", Before: "01D", Limit: 1})
	if err != nil || fmt.Sprint(deliveryIDs(page)) != "[01C]" {
		t.Errorf("page before 01D = %v, %v", deliveryIDs(page), err)
	}
	if none, err := s.DeliveryList(h.ctx, store.DeliveryListParams{Pipeline: "p", Kind: store.DeliveryNotification}); err != nil || len(none) != 0 {
		t.Errorf("notifications of p = %v, %v; want none", deliveryIDs(none), err)
	}

	h.tick(time.Second)
	up, err := s.DeliveryUpdate(h.ctx, store.DeliveryUpdateParams{ID: "01D", State: store.DeliveryAccepted, RunID: "r1", StatusCode: 202, Now: h.now})
	if err != nil || up.State != store.DeliveryAccepted || up.RunID != "r1" || up.StatusCode != 202 || !up.UpdatedAt.Equal(h.now) {
		t.Errorf("DeliveryUpdate = %+v, %v", up, err)
	}
	if _, err := s.DeliveryUpdate(h.ctx, store.DeliveryUpdateParams{ID: "nope", State: store.DeliveryAccepted, Now: h.now}); !errors.Is(err, errand.ErrNotFound) {
		t.Errorf("DeliveryUpdate nope = %v, want not found", err)
	}
	if _, err := s.DeliveryUpdate(h.ctx, store.DeliveryUpdateParams{ID: "01D", State: "gone", Now: h.now}); !errors.Is(err, errand.ErrInvalid) {
		t.Errorf("DeliveryUpdate to state gone = %v, want invalid", err)
	}
}

// testDeliveryClaim: a due pending notification is claimed by one caller
// until the claim ends; an ended one or one without NextAt never is; a
// dedupe key is held once.
func testDeliveryClaim(h *harness) {
	t, s := h.t, h.s
	due := h.now
	mk := func(id string, next *time.Time, key string) error {
		_, err := s.DeliveryCreate(h.ctx, store.DeliveryCreateParams{Delivery: &store.Delivery{ID: id, Pipeline: "p", Kind: store.DeliveryNotification,
			Bucket: "notify", Source: "webhook", Event: "run.finished", Target: "http://x", SecretName: "HOOK", DedupeKey: key, State: store.DeliveryPending,
			NextAt: next}, Now: h.now})
		return err
	}
	for i, id := range []string{"N1", "N2", "N3"} {
		if err := mk(id, &due, "run:r:"+id); err != nil {
			t.Fatalf("create %s (%d): %v", id, i, err)
		}
	}
	if err := mk("N4", nil, ""); err != nil {
		t.Fatal(err)
	}
	if err := mk("N5", nil, ""); err != nil {
		t.Errorf("two deliveries without a dedupe key: %v", err)
	}
	if err := mk("N6", &due, "run:r:N1"); !errors.Is(err, errand.ErrConflict) {
		t.Errorf("same dedupe key = %v, want conflict", err)
	}
	later := h.now.Add(time.Hour)
	if _, err := s.DeliveryUpdate(h.ctx, store.DeliveryUpdateParams{ID: "N3", State: store.DeliveryDelivered, Attempts: 1, Now: h.now}); err != nil {
		t.Fatal(err)
	}
	until := h.now.Add(time.Minute)
	var wg sync.WaitGroup
	claimed := make([][]*store.Delivery, 4)
	for i := range claimed {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if claimed[i], err = s.DeliveryClaim(h.ctx, store.DeliveryClaimParams{Now: h.now, Until: until}); err != nil {
				t.Errorf("DeliveryClaim: %v", err)
			}
		}()
	}
	wg.Wait()
	seen := map[string]int{}
	for _, c := range claimed {
		for _, d := range c {
			seen[d.ID]++
			if d.NextAt == nil || !d.NextAt.Equal(until) {
				t.Errorf("claimed %s with next_at %v, want %v", d.ID, d.NextAt, until)
			}
		}
	}
	if fmt.Sprint(seen) != "map[N1:1 N2:1]" {
		t.Errorf("claimed %v, want N1 and N2 once each", seen)
	}
	h.tick(30 * time.Second)
	if again, err := s.DeliveryClaim(h.ctx, store.DeliveryClaimParams{Now: h.now, Until: later}); err != nil || len(again) != 0 {
		t.Errorf("claim within the lease = %v, %v; want none", deliveryIDs(again), err)
	}
	h.tick(time.Minute)
	again, err := s.DeliveryClaim(h.ctx, store.DeliveryClaimParams{Now: h.now, Until: later, Limit: 1})
	if err != nil || fmt.Sprint(deliveryIDs(again)) != "[N1]" {
		t.Fatalf("claim after the lease = %v, %v; want N1 (limit 1)", deliveryIDs(again), err)
	}
	if again[0].SecretName != "HOOK" || again[0].Target != "http://x" || again[0].Kind != store.DeliveryNotification {
		t.Errorf("claimed %+v", again[0])
	}
}

// testDeliveryReplay: a replay key claimed within the window refuses
// another delivery as a replay naming the first; past the window, or
// once released, it is claimed again; of copies sent at once one claims.
func testDeliveryReplay(h *harness) {
	t, s := h.t, h.s
	first := h.delivery("R1", "p", "signed", 10, "delivery-id:abc", "body-sha256:111")
	if first.State != store.DeliveryPending || first.ReplayOf != "" {
		t.Fatalf("first = %+v", first)
	}
	h.tick(10 * time.Minute)
	again := h.delivery("R2", "p", "signed", 10, "delivery-id:xyz", "body-sha256:111")
	if again.State != store.DeliveryRefused || again.ReplayOf != "R1" || again.Reason == "" {
		t.Errorf("same body = %+v, want refused as a replay of R1", again)
	}
	if got, err := s.DeliveryGet(h.ctx, "R2"); err != nil || got.State != store.DeliveryRefused || got.ReplayOf != "R1" {
		t.Errorf("stored replay = %+v, %v", got, err)
	}
	// A refused replay claims nothing: its own new key stays free.
	if d := h.delivery("R3", "p", "signed", 10, "delivery-id:xyz"); d.ReplayOf != "" {
		t.Errorf("key of a refused replay was claimed: %+v", d)
	}
	if d := h.delivery("R4", "other", "signed", 10, "delivery-id:abc"); d.ReplayOf != "" {
		t.Errorf("another pipeline's key: %+v", d)
	}
	h.tick(51 * time.Minute)
	if d := h.delivery("R5", "p", "signed", 10, "delivery-id:abc"); d.ReplayOf != "" {
		t.Errorf("key claimed past the window: %+v", d)
	}
	if _, err := s.DeliveryUpdate(h.ctx, store.DeliveryUpdateParams{ID: "R5", State: store.DeliveryRefused, Reason: "no run", ReleaseKeys: true, Now: h.now}); err != nil {
		t.Fatal(err)
	}
	if d := h.delivery("R6", "p", "signed", 10, "delivery-id:abc"); d.ReplayOf != "" {
		t.Errorf("released key: %+v", d)
	}
	var wg sync.WaitGroup
	out := make([]*store.Delivery, 6)
	for i := range out {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			out[i], err = s.DeliveryCreate(h.ctx, store.DeliveryCreateParams{Delivery: &store.Delivery{ID: fmt.Sprintf("S%d", i), Pipeline: "p",
				Kind: store.DeliveryHook, Bucket: "signed", State: store.DeliveryPending}, Now: h.now, Keep: 100,
				ReplayKeys: []string{"delivery-id:same"}, ReplayWindow: time.Hour})
			if err != nil {
				t.Errorf("concurrent DeliveryCreate: %v", err)
			}
		}()
	}
	wg.Wait()
	claims := 0
	for _, d := range out {
		if d != nil && d.ReplayOf == "" {
			claims++
		}
	}
	if claims != 1 {
		t.Errorf("%d of %d copies sent at once claimed the key, want 1", claims, len(out))
	}
}

// testHookSecrets: rotating keeps the current secret as the previous one
// until the next rotation, its end or an explicit end.
func testHookSecrets(h *harness) {
	t, s := h.t, h.s
	if _, err := s.HookSecretGet(h.ctx, "p"); !errors.Is(err, errand.ErrNotFound) {
		t.Errorf("HookSecretGet before any = %v, want not found", err)
	}
	if _, err := s.HookSecretEndPrevious(h.ctx, "p"); !errors.Is(err, errand.ErrNotFound) {
		t.Errorf("HookSecretEndPrevious before any = %v, want not found", err)
	}
	if _, err := s.HookSecretRotate(h.ctx, store.HookSecretRotateParams{Pipeline: "p", Secret: "short", Now: h.now}); !errors.Is(err, errand.ErrInvalid) {
		t.Errorf("short secret = %v, want invalid", err)
	}
	one, err := s.HookSecretRotate(h.ctx, store.HookSecretRotateParams{Pipeline: "p", Secret: "first-secret-0123456789", Now: h.now})
	if err != nil || one.Current != "first-secret-0123456789" || one.Previous != "" || !one.RotatedAt.Equal(h.now) {
		t.Fatalf("first rotation = %+v, %v", one, err)
	}
	if v := one.Valid(h.now); fmt.Sprint(v) != "[first-secret-0123456789]" {
		t.Errorf("valid = %v", v)
	}
	h.tick(time.Minute)
	until := h.now.Add(time.Hour)
	two, err := s.HookSecretRotate(h.ctx, store.HookSecretRotateParams{Pipeline: "p", Secret: "second-secret-0123456789", PreviousUntil: &until, Now: h.now})
	if err != nil || two.Current != "second-secret-0123456789" || two.Previous != "first-secret-0123456789" || two.PreviousUntil == nil || !two.PreviousUntil.Equal(until) {
		t.Fatalf("second rotation = %+v, %v", two, err)
	}
	got, err := s.HookSecretGet(h.ctx, "p")
	if err != nil || fmt.Sprint(got.Valid(h.now)) != "[second-secret-0123456789 first-secret-0123456789]" {
		t.Errorf("during the switch: %+v, %v", got, err)
	}
	if v := got.Valid(until); fmt.Sprint(v) != "[second-secret-0123456789]" {
		t.Errorf("after the previous one expired: %v", v)
	}
	three, err := s.HookSecretRotate(h.ctx, store.HookSecretRotateParams{Pipeline: "p", Secret: "third-secret-0123456789", Now: h.now})
	if err != nil || three.Previous != "second-secret-0123456789" || three.PreviousUntil != nil {
		t.Errorf("third rotation = %+v, %v: the first secret is gone, the second is previous until the next rotation", three, err)
	}
	ended, err := s.HookSecretEndPrevious(h.ctx, "p")
	if err != nil || ended.Previous != "" || ended.Current != "third-secret-0123456789" {
		t.Errorf("HookSecretEndPrevious = %+v, %v", ended, err)
	}
	if _, err := s.HookSecretGet(h.ctx, "q"); !errors.Is(err, errand.ErrNotFound) {
		t.Errorf("another pipeline's secret = %v, want not found", err)
	}
}

// testGateWaitingChange: a gate announces that it waits, once, both when
// it is created waiting and when its dependencies release it; an
// approval that does not complete it announces nothing more.
func testGateWaitingChange(h *harness) {
	rec := &recorder{}
	defer h.s.Subscribe(rec.add)()
	h.createRun(&store.Run{ID: "r1"}, gate("g1", 2), task("build"), gate("g2", 1, dep("build", errand.OnSuccess)))
	rec.waitFor(h.t, store.Change{Kind: store.ChangeTaskWaiting, TaskID: "g1", TaskType: "errand.approval"})
	h.mustApproveGate("r1", "a", "g1", "alice", 1)
	d := h.register("d1")
	h.report(h.acquireOne(d, "build"), errand.StateSucceeded)
	h.wantState("g2", errand.StateWaiting)
	rec.waitFor(h.t, store.Change{Kind: store.ChangeTaskWaiting, TaskID: "g2", TaskType: "errand.approval"})
	rec.mu.Lock()
	defer rec.mu.Unlock()
	n := 0
	for _, c := range rec.changes {
		if c.Kind == store.ChangeTaskWaiting {
			n++
		}
	}
	if n != 2 {
		h.t.Errorf("%d task_waiting changes, want 2 (one per gate): %+v", n, rec.changes)
	}
}
