package hooks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
	"github.com/errandci/errand/manager/store/sqlite"
)

// fakePipelines knows the pipelines named and starts runs r1, r2, … for
// them, keeping the triggers; startErr, when set, is what StartRun
// answers.
type fakePipelines struct {
	mu       sync.Mutex
	names    map[string]bool
	disabled map[string]bool
	extra    []string
	started  []*Trigger
	startErr error
}

func (f *fakePipelines) PipelineExists(_ context.Context, name string) error {
	if !f.names[name] {
		return errand.Errorf(errand.CodeNotFound, "pipeline %s not found", name)
	}
	return nil
}

func (f *fakePipelines) WebhookTrigger(_ context.Context, name string) (bool, []string, error) {
	return !f.disabled[name], f.extra, nil
}

func (f *fakePipelines) StartRun(_ context.Context, name, _ string, t *Trigger) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.startErr != nil {
		return "", f.startErr
	}
	f.started = append(f.started, t)
	return fmt.Sprintf("r%d", len(f.started)), nil
}

func (f *fakePipelines) runs() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.started)
}

type svcFixture struct {
	t     *testing.T
	st    store.Store
	s     *Service
	pipes *fakePipelines
	now   time.Time
}

func newSvc(t *testing.T, mod func(*Config)) *svcFixture {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "errand.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	f := &svcFixture{t: t, st: st, pipes: &fakePipelines{names: map[string]bool{"web": true, "api": true}}, now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
	log := logrus.New()
	log.SetOutput(io.Discard)
	cfg := Config{MaxBody: 4096, Log: log, Now: func() time.Time { return f.now }}
	if mod != nil {
		mod(&cfg)
	}
	if f.s, err = New(cfg, st, f.pipes); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *svcFixture) rotate(pipeline string, prev time.Duration) string {
	f.t.Helper()
	h, err := f.s.Rotate(context.Background(), pipeline, prev)
	if err != nil {
		f.t.Fatal(err)
	}
	return h.Current
}

// send delivers body to pipeline with headers (name, value pairs).
func (f *svcFixture) send(pipeline, body string, headers ...string) *Result {
	h := http.Header{}
	for i := 0; i+1 < len(headers); i += 2 {
		h.Set(headers[i], headers[i+1])
	}
	return f.s.Receive(context.Background(), pipeline, h, strings.NewReader(body))
}

func (f *svcFixture) list(pipeline string) []*store.Delivery {
	f.t.Helper()
	l, err := f.st.DeliveryList(context.Background(), store.DeliveryListParams{Pipeline: pipeline})
	if err != nil {
		f.t.Fatal(err)
	}
	return l
}

// TestReceive: a delivery signed with the pipeline's secret starts a run
// and is recorded accepted with it; a wrong or missing signature is 401,
// starts nothing and is recorded refused, without its body.
func TestReceive(t *testing.T) {
	f := newSvc(t, nil)
	secret := f.rotate("web", time.Hour)
	body := `{"ref":"refs/heads/main","commit":"abc123","event":"push","variables":{"TARGET":"prod"}}`
	r := f.send("web", body, HeaderErrandSignature, "sha256="+hexMAC(secret, body))
	if r.Status != http.StatusCreated || r.Err != nil || r.Delivery.State != store.DeliveryAccepted || r.Delivery.RunID != "r1" {
		t.Fatalf("signed delivery: %+v %v", r, r.Err)
	}
	if tr := f.pipes.started[0]; tr.Branch != "main" || tr.Commit != "abc123" || tr.Variables["TARGET"] != "prod" || tr.Event != "push" {
		t.Errorf("trigger = %+v", tr)
	}
	got, err := f.st.DeliveryGet(context.Background(), r.Delivery.ID)
	if err != nil || string(got.Body) != body || got.StatusCode != 201 || got.Target != HeaderErrandSignature || got.Bucket != BucketSigned {
		t.Errorf("recorded = %+v, %v", got, err)
	}
	for _, c := range []struct{ name, header, value string }{
		{"wrong secret", HeaderErrandSignature, "sha256=" + hexMAC("not-the-secret", body)},
		{"no signature", "X-Other", "x"},
		{"malformed", HeaderGitHubSignature, "md5=abc"},
	} {
		r := f.send("web", body, c.header, c.value)
		if r.Status != http.StatusUnauthorized || errand.ErrorCode(r.Err) != errand.CodeUnauthorized || r.Delivery == nil ||
			r.Delivery.State != store.DeliveryRefused || r.Delivery.Reason == "" {
			t.Errorf("%s: %+v %v", c.name, r, r.Err)
			continue
		}
		if d, err := f.st.DeliveryGet(context.Background(), r.Delivery.ID); err != nil || d.Body != nil || d.Bucket != BucketUnsigned || d.StatusCode != 401 {
			t.Errorf("%s: recorded %+v, %v; want no body, unsigned bucket, 401", c.name, d, err)
		}
	}
	if n := f.pipes.runs(); n != 1 {
		t.Errorf("%d runs started, want 1", n)
	}
	if l := f.list("web"); len(l) != 4 {
		t.Errorf("%d deliveries recorded, want 4", len(l))
	}
	runs := f.pipes.runs()
	defer func() {
		if n := f.pipes.runs(); n != runs+1 {
			t.Errorf("%d runs started, want %d", n, runs+1)
		}
	}()
	// An unknown pipeline is answered as a wrong signature, and nothing
	// is recorded.
	unknown := f.send("nope", body, HeaderErrandSignature, "sha256="+hexMAC(secret, body))
	if unknown.Status != http.StatusUnauthorized || unknown.Delivery != nil {
		t.Errorf("unknown pipeline: %+v", unknown)
	}
	// A pipeline with no secret yet says how to make one.
	none := f.send("api", body, HeaderErrandSignature, "sha256="+hexMAC(secret, body))
	if none.Status != http.StatusUnauthorized || !strings.Contains(none.Delivery.Reason, "rotate-secret api") {
		t.Errorf("no secret: %+v", none.Delivery)
	}
	// The manager secrets the pipeline's trigger names verify too.
	f.pipes.extra = []string{"named-manager-secret"}
	other := `{"ref":"main","commit":"e1"}`
	if r := f.send("api", other, HeaderErrandSignature, "sha256="+hexMAC("named-manager-secret", other)); r.Status != http.StatusCreated {
		t.Errorf("signed with a trigger's secret: %+v %v", r.Delivery, r.Err)
	}
	// A pipeline whose triggers take no webhook refuses a genuine
	// delivery, recorded with why.
	f.pipes.disabled = map[string]bool{"web": true}
	off := f.send("web", `{"ref":"x"}`, HeaderErrandSignature, "sha256="+hexMAC(secret, `{"ref":"x"}`))
	if off.Status != http.StatusForbidden || errand.ErrorCode(off.Err) != errand.CodeForbidden || !strings.Contains(off.Delivery.Reason, "triggers") {
		t.Errorf("webhook trigger off: %+v %v", off.Delivery, off.Err)
	}
}

// TestReplay: the same body, or the same GitHub delivery id, accepted
// within the window is refused as a replay, recorded with the delivery
// it repeats; past the window it is accepted again.
func TestReplay(t *testing.T) {
	f := newSvc(t, func(c *Config) { c.ReplayWindow = time.Hour })
	secret := f.rotate("web", time.Hour)
	push := string(readPayload(t, "github-push.json"))
	first := f.send("web", push, HeaderGitHubSignature, "sha256="+hexMAC(secret, push), HeaderGitHubEvent, "push", HeaderGitHubDelivery, "d-1")
	if first.Status != http.StatusCreated {
		t.Fatalf("first: %+v %v", first, first.Err)
	}
	again := f.send("web", push, HeaderGitHubSignature, "sha256="+hexMAC(secret, push), HeaderGitHubEvent, "push", HeaderGitHubDelivery, "d-2")
	if again.Status != http.StatusConflict || again.Delivery.State != store.DeliveryRefused || again.Delivery.ReplayOf != first.Delivery.ID ||
		!strings.Contains(again.Delivery.Reason, "replay") {
		t.Fatalf("same body: %+v %v", again.Delivery, again.Err)
	}
	other := strings.Replace(push, "Update README.md", "Another change", 1)
	sameID := f.send("web", other, HeaderGitHubSignature, "sha256="+hexMAC(secret, other), HeaderGitHubEvent, "push", HeaderGitHubDelivery, "d-1")
	if sameID.Status != http.StatusConflict || sameID.Delivery.ReplayOf != first.Delivery.ID {
		t.Fatalf("same delivery id: %+v", sameID.Delivery)
	}
	if d, _ := f.st.DeliveryGet(context.Background(), sameID.Delivery.ID); d.StatusCode != 409 {
		t.Errorf("replay recorded with status %d, want 409", d.StatusCode)
	}
	if n := f.pipes.runs(); n != 1 {
		t.Fatalf("%d runs, want 1", n)
	}
	f.now = f.now.Add(61 * time.Minute)
	later := f.send("web", push, HeaderGitHubSignature, "sha256="+hexMAC(secret, push), HeaderGitHubEvent, "push", HeaderGitHubDelivery, "d-1")
	if later.Status != http.StatusCreated {
		t.Errorf("past the window: %+v %v", later.Delivery, later.Err)
	}
}

// TestOversized: a body past the limit is 413, recorded refused, and
// never read past the limit.
func TestOversized(t *testing.T) {
	f := newSvc(t, func(c *Config) { c.MaxBody = 1024 })
	secret := f.rotate("web", 0)
	big := `{"ref":"main","variables":{"X":"` + strings.Repeat("x", 2000) + `"}}`
	counted := &countingReader{r: strings.NewReader(big + strings.Repeat(" ", 10<<20))}
	h := http.Header{}
	h.Set(HeaderErrandSignature, "sha256="+hexMAC(secret, big))
	r := f.s.Receive(context.Background(), "web", h, counted)
	if r.Status != http.StatusRequestEntityTooLarge || errand.ErrorCode(r.Err) != errand.CodeTooLarge || r.Delivery.State != store.DeliveryRefused {
		t.Fatalf("oversized: %+v %v", r, r.Err)
	}
	if counted.n > 1024+1+32<<10 {
		t.Errorf("read %d bytes of an oversized body, want about the limit", counted.n)
	}
	if f.pipes.runs() != 0 {
		t.Errorf("an oversized delivery started a run")
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += n
	return n, err
}

// TestRotation: during a rotation both secrets verify; the previous one
// stops at its end, at the next rotation, or when ended explicitly.
func TestRotation(t *testing.T) {
	f := newSvc(t, nil)
	old := f.rotate("web", time.Hour)
	cur := f.rotate("web", time.Hour)
	if old == cur || len(cur) < 40 {
		t.Fatalf("secrets %q, %q", old, cur)
	}
	n := 0
	try := func(secret string) int {
		n++
		body := fmt.Sprintf(`{"ref":"main","commit":"c%d"}`, n)
		return f.send("web", body, HeaderErrandSignature, "sha256="+hexMAC(secret, body)).Status
	}
	if try(old) != 201 || try(cur) != 201 {
		t.Fatal("during the switch both secrets must verify")
	}
	f.now = f.now.Add(time.Hour)
	if try(old) != 401 || try(cur) != 201 {
		t.Error("past its end the previous secret must not verify")
	}
	newer := f.rotate("web", time.Hour)
	if try(cur) != 201 {
		t.Error("the replaced secret verifies until its end")
	}
	if _, err := f.s.EndPrevious(context.Background(), "web"); err != nil {
		t.Fatal(err)
	}
	if try(cur) != 401 || try(newer) != 201 {
		t.Error("after EndPrevious only the current secret verifies")
	}
	f.rotate("web", 0)
	if try(newer) != 401 {
		t.Error("a rotation with no overlap ends the previous secret at once")
	}
	if _, err := f.s.Rotate(context.Background(), "nope", 0); !errors.Is(err, errand.ErrNotFound) {
		t.Errorf("rotate an unknown pipeline = %v", err)
	}
	if _, err := f.s.Rotate(context.Background(), "web", 31*24*time.Hour); !errors.Is(err, errand.ErrInvalid) {
		t.Errorf("rotate with a too long overlap = %v", err)
	}
}

// TestIgnoredAndRedeliver: a ping or a closed pull request is answered
// 202 and recorded refused with why; a redelivery starts the run again
// as a new delivery; one refused unsigned cannot be redelivered.
func TestIgnoredAndRedeliver(t *testing.T) {
	f := newSvc(t, nil)
	secret := f.rotate("web", 0)
	ping := `{"zen":"Design for failure.","hook_id":7}`
	r := f.send("web", ping, HeaderGitHubSignature, "sha256="+hexMAC(secret, ping), HeaderGitHubEvent, "ping")
	if r.Status != http.StatusAccepted || r.Err != nil || r.Delivery.State != store.DeliveryRefused || !strings.Contains(r.Delivery.Reason, "ping") {
		t.Fatalf("ping: %+v", r.Delivery)
	}
	pr := string(readPayload(t, "gitea-pull_request.json"))
	ok := f.send("web", pr, HeaderGiteaSignature, hexMAC(secret, pr), HeaderGiteaEvent, "pull_request", HeaderGiteaDelivery, "g-1")
	if ok.Status != http.StatusCreated || f.pipes.started[0].Event != "pull_request" || f.pipes.started[0].Branch != "main" {
		t.Fatalf("gitea pull request: %+v %v", ok.Delivery, ok.Err)
	}
	orig, err := f.st.DeliveryGet(context.Background(), ok.Delivery.ID)
	if err != nil {
		t.Fatal(err)
	}
	again := f.s.Redeliver(context.Background(), orig)
	if again.Status != http.StatusCreated || again.Delivery.RedeliveryOf != orig.ID || again.Delivery.RunID != "r2" || again.Delivery.ID == orig.ID {
		t.Fatalf("redeliver: %+v %v", again.Delivery, again.Err)
	}
	bad := f.send("web", pr, HeaderGiteaSignature, hexMAC("wrong", pr), HeaderGiteaEvent, "pull_request")
	unsigned, err := f.st.DeliveryGet(context.Background(), bad.Delivery.ID)
	if err != nil {
		t.Fatal(err)
	}
	if r := f.s.Redeliver(context.Background(), unsigned); r.Status != http.StatusConflict || errand.ErrorCode(r.Err) != errand.CodeConflict {
		t.Errorf("redeliver an unsigned refusal: %+v %v", r, r.Err)
	}
	// A run that cannot start is recorded refused and its keys released:
	// the same delivery is accepted once the pipeline can run.
	f.pipes.startErr = errand.Errorf(errand.CodeUnavailable, "store closed")
	push := `{"ref":"main","commit":"fff"}`
	failed := f.send("web", push, HeaderErrandSignature, "sha256="+hexMAC(secret, push))
	if failed.Status != http.StatusServiceUnavailable || failed.Delivery.State != store.DeliveryRefused {
		t.Fatalf("start failed: %+v %v", failed.Delivery, failed.Err)
	}
	f.pipes.startErr = &Ignored{Reason: "no trigger of pipeline web takes event push on branch main"}
	if r := f.send("web", push, HeaderErrandSignature, "sha256="+hexMAC(secret, push)); r.Status != http.StatusAccepted || !strings.Contains(r.Delivery.Reason, "no trigger") {
		t.Fatalf("not a trigger of the pipeline: %+v %v", r.Delivery, r.Err)
	}
	f.pipes.startErr = nil
	if r := f.send("web", push, HeaderErrandSignature, "sha256="+hexMAC(secret, push)); r.Status != http.StatusCreated {
		t.Errorf("after the failure: %+v %v", r.Delivery, r.Err)
	}
}

// TestUnsignedRefusalsBounded: refusals of unsigned deliveries are
// recorded at a bounded rate per pipeline and kept to a bounded number;
// the signed record is not pushed out by them.
func TestUnsignedRefusalsBounded(t *testing.T) {
	f := newSvc(t, func(c *Config) { c.UnsignedPerMinute = 5; c.KeepUnsigned = 3 })
	secret := f.rotate("web", 0)
	good := `{"ref":"main"}`
	if r := f.send("web", good, HeaderErrandSignature, "sha256="+hexMAC(secret, good)); r.Status != 201 {
		t.Fatal(r.Err)
	}
	recorded := 0
	for i := 0; i < 20; i++ {
		r := f.send("web", "junk", HeaderErrandSignature, "sha256="+strings.Repeat("0", 64))
		if r.Status != http.StatusUnauthorized {
			t.Fatalf("unsigned %d: %d", i, r.Status)
		}
		if r.Delivery != nil {
			recorded++
		}
	}
	if recorded != 5 {
		t.Errorf("%d of 20 refusals recorded in a minute, want 5", recorded)
	}
	l := f.list("web")
	if len(l) != 4 || l[len(l)-1].State != store.DeliveryAccepted {
		t.Errorf("kept %d deliveries (want the 3 newest refusals and the accepted one): %+v", len(l), l)
	}
	f.now = f.now.Add(time.Minute)
	if r := f.send("web", "junk", HeaderErrandSignature, "sha256="+strings.Repeat("0", 64)); r.Delivery == nil {
		t.Error("a refusal in the next minute is recorded again")
	}
}
