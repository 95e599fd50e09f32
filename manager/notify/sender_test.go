package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/errandci/errand/client"
	"github.com/errandci/errand/internal/clock"
	"github.com/errandci/errand/manager/scheduler"
	"github.com/errandci/errand/manager/store"
	"github.com/errandci/errand/manager/store/sqlite"
)

// receiver is a test HTTP receiver on loopback: it answers with the
// statuses given, in turn (200 once they are used up), and keeps what it
// was sent.
type receiver struct {
	srv      *httptest.Server
	mu       sync.Mutex
	statuses []int
	got      []*http.Request
	bodies   [][]byte
}

func newReceiver(t *testing.T, statuses ...int) *receiver {
	r := &receiver{statuses: statuses}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.got, r.bodies = append(r.got, req), append(r.bodies, b)
		status := http.StatusOK
		if len(r.statuses) > 0 {
			status, r.statuses = r.statuses[0], r.statuses[1:]
		}
		r.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) requests() ([]*http.Request, [][]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*http.Request(nil), r.got...), append([][]byte(nil), r.bodies...)
}

type fixture struct {
	t      *testing.T
	st     store.Store
	s      *Sender
	clock  *clock.Fake
	seen   chan store.Delivery
	logBuf *bytes.Buffer
}

func newFixture(t *testing.T, secrets scheduler.SecretMap, mod func(*Config)) *fixture {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "errand.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	f := &fixture{t: t, st: st, clock: clock.NewFake(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)), seen: make(chan store.Delivery, 100), logBuf: &bytes.Buffer{}}
	log := logrus.New()
	log.SetOutput(&lockedWriter{w: f.logBuf})
	log.SetLevel(logrus.DebugLevel)
	cfg := Config{Secrets: secrets, AllowPrivate: true, MaxAttempts: 3, InitialInterval: time.Second, MaxInterval: 4 * time.Second,
		Workers: 2, Observe: func(d store.Delivery) { f.seen <- d }, Log: log, Clock: f.clock, ExternalURL: "https://ci.example.com/"}
	if mod != nil {
		mod(&cfg)
	}
	if f.s, err = New(cfg, st); err != nil {
		t.Fatal(err)
	}
	return f
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

func (f *fixture) start() {
	if err := f.s.Start(context.Background()); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { _ = f.s.Stop(context.Background()) })
}

// next waits for the next recorded attempt.
func (f *fixture) next() store.Delivery {
	f.t.Helper()
	select {
	case d := <-f.seen:
		return d
	case <-time.After(20 * time.Second):
		f.t.Fatal("no attempt was recorded")
	}
	return store.Delivery{}
}

// retry moves the clock past the backoff wait once the worker armed it
// (the resume loop holds the other timer).
func (f *fixture) retry() {
	f.t.Helper()
	if !f.clock.WaitTimers(2, nil) {
		f.t.Fatal("no retry timer")
	}
	f.clock.Advance(f.s.cfg.MaxInterval * 2)
}

func finishedRun(result string) *client.Run {
	started := time.Date(2030, 1, 2, 3, 0, 0, 0, time.UTC)
	finished := started.Add(90 * time.Second)
	return &client.Run{Kind: "run", ID: "01RUN", Href: "/api/v1/runs/01RUN", Branch: "main", Event: "push", Phase: "finished",
		Result: result, CreatedAt: started, StartedAt: &started, FinishedAt: &finished, Duration: 90_000_000_000,
		Stages: []*client.RunStage{{Name: "build", State: "succeeded"}, {Name: "test", State: "failed"}}}
}

// TestWebhookRetriedAfter500: a receiver that answers 500 gets the
// notification again after the backoff wait, signed with the entry's
// secret under a real HMAC, and the delivery records both attempts.
func TestWebhookRetriedAfter500(t *testing.T) {
	rcv := newReceiver(t, http.StatusInternalServerError)
	f := newFixture(t, scheduler.SecretMap{"HOOK_KEY": "notify-secret"}, nil)
	f.start()
	ev := &Event{Kind: EventRunFinished, Pipeline: "web", Run: finishedRun("failed")}
	targets := []Target{{Webhook: &Webhook{URL: rcv.srv.URL + "/hook", SecretName: "HOOK_KEY", On: []string{OnFailure}}},
		{Webhook: &Webhook{URL: rcv.srv.URL + "/never", On: []string{OnSuccess}}}}
	if err := f.s.Notify(context.Background(), ev, targets); err != nil {
		t.Fatal(err)
	}
	first := f.next()
	if first.State != store.DeliveryPending || first.Attempts != 1 || first.StatusCode != 500 || !strings.Contains(first.Reason, "500") {
		t.Fatalf("after the 500: %+v", first)
	}
	f.retry()
	second := f.next()
	if second.State != store.DeliveryDelivered || second.Attempts != 2 || second.StatusCode != 200 || second.NextAt != nil {
		t.Fatalf("after the retry: %+v", second)
	}
	reqs, bodies := rcv.requests()
	if len(reqs) != 2 {
		t.Fatalf("receiver got %d requests, want 2 (the target on success only gets none)", len(reqs))
	}
	for i, r := range reqs {
		m := hmac.New(sha256.New, []byte("notify-secret"))
		m.Write(bodies[i])
		if want := "sha256=" + hex.EncodeToString(m.Sum(nil)); r.Header.Get("X-Errand-Signature-256") != want {
			t.Errorf("request %d: signature %q, want %q", i, r.Header.Get("X-Errand-Signature-256"), want)
		}
		if r.URL.Path != "/hook" || r.Header.Get("X-Errand-Event") != EventRunFinished || r.Header.Get("X-Errand-Delivery") != first.ID {
			t.Errorf("request %d: %s %v", i, r.URL.Path, r.Header)
		}
	}
	var n client.Notification
	if err := json.Unmarshal(bodies[1], &n); err != nil {
		t.Fatal(err)
	}
	if n.Kind != "notification" || n.ID != first.ID || n.Event != EventRunFinished || n.Pipeline != "web" || n.Run.Result != "failed" ||
		n.Run.Branch != "main" || len(n.Run.Stages) != 2 || n.URL != "https://ci.example.com/ui/runs/01RUN" {
		t.Errorf("payload = %s", bodies[1])
	}
	list, err := f.st.DeliveryList(context.Background(), store.DeliveryListParams{Pipeline: "web"})
	if err != nil || len(list) != 1 || list[0].Attempts != 2 || list[0].State != store.DeliveryDelivered {
		t.Errorf("recorded deliveries = %+v, %v", list, err)
	}
	// The same event again (another manager saw the run end too) makes
	// no second notification.
	if err := f.s.Notify(context.Background(), ev, targets); err != nil {
		t.Fatal(err)
	}
	if list, _ := f.st.DeliveryList(context.Background(), store.DeliveryListParams{Pipeline: "web"}); len(list) != 1 {
		t.Errorf("the same event twice made %d deliveries", len(list))
	}
}

// TestWebhookGivesUp: a receiver that refuses with 4xx is not retried; one
// that keeps answering 500 is tried MaxAttempts times; both end failed
// with the reason.
func TestWebhookGivesUp(t *testing.T) {
	refusing := newReceiver(t, http.StatusBadRequest)
	failing := newReceiver(t, 500, 500, 500, 500)
	f := newFixture(t, nil, nil)
	f.start()
	ev := &Event{Kind: EventRunFinished, Pipeline: "p", Run: finishedRun("success")}
	if err := f.s.Notify(context.Background(), ev, []Target{{Webhook: &Webhook{URL: refusing.srv.URL}}}); err != nil {
		t.Fatal(err)
	}
	if d := f.next(); d.State != store.DeliveryFailed || d.Attempts != 1 || d.StatusCode != 400 || !strings.Contains(d.Reason, "refused") {
		t.Fatalf("refused: %+v", d)
	}
	ev.Run.ID = "01OTHER"
	if err := f.s.Notify(context.Background(), ev, []Target{{Webhook: &Webhook{URL: failing.srv.URL}}}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		d := f.next()
		if d.Attempts != i {
			t.Fatalf("attempt %d recorded as %+v", i, d)
		}
		if i < 3 {
			if d.State != store.DeliveryPending {
				t.Fatalf("attempt %d: %+v", i, d)
			}
			f.retry()
			continue
		}
		if d.State != store.DeliveryFailed || !strings.Contains(d.Reason, "500") {
			t.Fatalf("last attempt: %+v", d)
		}
	}
	if reqs, _ := failing.requests(); len(reqs) != 3 {
		t.Errorf("failing receiver got %d requests, want 3", len(reqs))
	}
}

// TestSlackURLNeverShown: the Slack form posts incoming-webhook text to
// the URL its secret holds; the URL (its token) appears in no recorded
// reason, target or log line, not even when the post fails.
func TestSlackURLNeverShown(t *testing.T) {
	rcv := newReceiver(t, http.StatusServiceUnavailable)
	const token = "T0001/B0002/XXXXSECRETTOKENXXXX"
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL + "/services/" + token
	dead.Close()
	f := newFixture(t, scheduler.SecretMap{"SLACK_URL": rcv.srv.URL + "/services/" + token, "DEAD_SLACK": deadURL}, func(c *Config) { c.MaxAttempts = 2 })
	f.start()
	ev := &Event{Kind: EventStageWaiting, Pipeline: "deploy<&>", Run: finishedRun("unknown"), Stage: "prod"}
	ev.Run.Phase = "running"
	if err := f.s.Notify(context.Background(), ev, []Target{{Slack: &Slack{URLSecret: "SLACK_URL", On: []string{OnWaiting}}}}); err != nil {
		t.Fatal(err)
	}
	d := f.next()
	if d.State != store.DeliveryPending || d.Target != "slack:SLACK_URL" || d.Source != SourceSlack {
		t.Fatalf("first attempt: %+v", d)
	}
	f.retry()
	if d = f.next(); d.State != store.DeliveryDelivered {
		t.Fatalf("second attempt: %+v", d)
	}
	reqs, bodies := rcv.requests()
	if len(reqs) != 2 || reqs[1].URL.Path != "/services/"+token {
		t.Fatalf("Slack receiver got %d requests", len(reqs))
	}
	var msg struct{ Text string }
	if err := json.Unmarshal(bodies[1], &msg); err != nil {
		t.Fatal(err)
	}
	want := "Stage *prod* of *deploy&lt;&amp;&gt;* <https://ci.example.com/ui/runs/01RUN|run 01RUN> on `main` (push) waits for approval"
	if !strings.Contains(msg.Text, want) {
		t.Errorf("Slack text = %q, want it to contain %q", msg.Text, want)
	}
	ev.Run.ID = "01DEAD"
	if err := f.s.Notify(context.Background(), ev, []Target{{Slack: &Slack{URLSecret: "DEAD_SLACK", On: []string{OnWaiting}}}}); err != nil {
		t.Fatal(err)
	}
	d = f.next()
	f.retry()
	d = f.next()
	if d.State != store.DeliveryFailed || d.Reason == "" {
		t.Fatalf("dead Slack URL: %+v", d)
	}
	list, err := f.st.DeliveryList(context.Background(), store.DeliveryListParams{Pipeline: ev.Pipeline})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range list {
		for _, s := range []string{d.Reason, d.Target} {
			if strings.Contains(s, "SECRETTOKEN") || strings.Contains(s, "/services/") {
				t.Errorf("delivery %s shows the Slack URL: %q", d.ID, s)
			}
		}
	}
	if strings.Contains(f.log(), "SECRETTOKEN") {
		t.Errorf("the log shows the Slack URL:\n%s", f.log())
	}
}

func (f *fixture) log() string {
	w := f.s.log.Out.(*lockedWriter)
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.String()
}

// TestPrivateAddressRefused: without AllowPrivate a notification to a
// loopback address is not sent, and says why.
func TestPrivateAddressRefused(t *testing.T) {
	rcv := newReceiver(t)
	f := newFixture(t, nil, func(c *Config) { c.AllowPrivate = false })
	f.start()
	ev := &Event{Kind: EventRunFinished, Pipeline: "p", Run: finishedRun("success")}
	if err := f.s.Notify(context.Background(), ev, []Target{{Webhook: &Webhook{URL: rcv.srv.URL}}}); err != nil {
		t.Fatal(err)
	}
	d := f.next()
	if d.State != store.DeliveryFailed || d.Attempts != 1 || !strings.Contains(d.Reason, "not a public address") {
		t.Fatalf("loopback target: %+v", d)
	}
	if reqs, _ := rcv.requests(); len(reqs) != 0 {
		t.Errorf("the loopback receiver got %d requests", len(reqs))
	}
}

// TestResumeAndRedeliver: a notification left pending by a sender that
// stopped is sent by the next one to start; a redelivery is a new
// delivery with the new id in its payload.
func TestResumeAndRedeliver(t *testing.T) {
	rcv := newReceiver(t)
	f := newFixture(t, nil, nil)
	ev := &Event{Kind: EventRunFinished, Pipeline: "p", Run: finishedRun("cancelled")}
	// Recorded, not sent: the sender is not started.
	if err := f.s.Notify(context.Background(), ev, []Target{{Webhook: &Webhook{URL: rcv.srv.URL}}}); err != nil {
		t.Fatal(err)
	}
	list, err := f.st.DeliveryList(context.Background(), store.DeliveryListParams{Pipeline: "p"})
	if err != nil || len(list) != 1 || list[0].State != store.DeliveryPending || list[0].Attempts != 0 {
		t.Fatalf("recorded = %+v, %v", list, err)
	}
	// Another manager over the same store, after the first one's lease
	// ended.
	log := logrus.New()
	log.SetOutput(io.Discard)
	seen := make(chan store.Delivery, 10)
	other, err := New(Config{AllowPrivate: true, Log: log, Clock: f.clock, Observe: func(d store.Delivery) { seen <- d }}, f.st)
	if err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(f.s.lease + time.Second)
	if err := other.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = other.Stop(context.Background()) }()
	var d store.Delivery
	select {
	case d = <-seen:
	case <-time.After(20 * time.Second):
		t.Fatal("the pending notification was not resumed")
	}
	if d.State != store.DeliveryDelivered || d.ID != list[0].ID || d.Attempts != 1 {
		t.Fatalf("resumed: %+v", d)
	}
	orig, err := f.st.DeliveryGet(context.Background(), d.ID)
	if err != nil {
		t.Fatal(err)
	}
	again, err := other.Redeliver(context.Background(), orig)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case d = <-seen:
	case <-time.After(20 * time.Second):
		t.Fatal("the redelivery was not sent")
	}
	if d.ID != again.ID || d.State != store.DeliveryDelivered || again.RedeliveryOf != orig.ID {
		t.Fatalf("redelivery: %+v (created %+v)", d, again)
	}
	_, bodies := rcv.requests()
	var n client.Notification
	if len(bodies) != 2 || json.Unmarshal(bodies[1], &n) != nil || n.ID != again.ID || n.Run.Result != "cancelled" {
		t.Errorf("redelivered payload = %s", bodies[len(bodies)-1])
	}
}

// TestWants: an entry is notified of what its on names; finished is
// every end, failed is failure, and no on means finished.
func TestWants(t *testing.T) {
	cases := []struct {
		on     []string
		kind   string
		result string
		want   bool
	}{
		{nil, EventRunFinished, "success", true},
		{nil, EventRunFinished, "cancelled", true},
		{nil, EventStageWaiting, "unknown", false},
		{nil, EventRunStarted, "unknown", false},
		{[]string{OnFailure}, EventRunFinished, "failed", true},
		{[]string{OnFailed}, EventRunFinished, "failed", true},
		{[]string{OnFailure}, EventRunFinished, "success", false},
		{[]string{OnSuccess, OnWaiting}, EventStageWaiting, "unknown", true},
		{[]string{OnStarted}, EventRunStarted, "unknown", true},
		{[]string{OnFinished}, EventRunFinished, "failed", true},
		{[]string{OnCancelled}, EventRunFinished, "failed", false},
	}
	for _, c := range cases {
		ev := &Event{Kind: c.kind, Run: &client.Run{Result: c.result}}
		for _, tg := range []Target{{Webhook: &Webhook{URL: "https://x", On: c.on}}, {Slack: &Slack{URLSecret: "S", On: c.on}}} {
			if got := tg.Wants(ev); got != c.want {
				t.Errorf("on %v, %s %s: %v, want %v", c.on, c.kind, c.result, got, c.want)
			}
		}
	}
}
