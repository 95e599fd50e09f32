package manager

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/httphelper"
	"github.com/errandci/errand/manager/scheduler"
)

// hookHMAC signs body as a sender does, independently of the manager's
// code.
func hookHMAC(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// hook posts a delivery to pipeline with headers (name, value pairs) and
// no bearer token.
func (e *env) hook(pipeline string, body []byte, headers ...string) (int, http.Header, []byte) {
	e.t.Helper()
	req, err := http.NewRequest("POST", e.ts.URL+"/api/v1/hooks/"+pipeline, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := e.http.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// notifyReceiver is a test HTTP receiver on loopback for notifications:
// it answers the statuses given in turn (then 200) and hands each
// request's body and headers to got.
type notifyReceiver struct {
	srv      *httptest.Server
	mu       sync.Mutex
	statuses []int
	got      chan notifyRequest
}

type notifyRequest struct {
	header http.Header
	body   []byte
	status int
}

func newNotifyReceiver(t *testing.T, statuses ...int) *notifyReceiver {
	r := &notifyReceiver{statuses: statuses, got: make(chan notifyRequest, 100)}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		status := http.StatusOK
		if len(r.statuses) > 0 {
			status, r.statuses = r.statuses[0], r.statuses[1:]
		}
		r.mu.Unlock()
		w.WriteHeader(status)
		r.got <- notifyRequest{header: req.Header.Clone(), body: b, status: status}
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *notifyReceiver) next(t *testing.T) notifyRequest {
	t.Helper()
	select {
	case n := <-r.got:
		return n
	case <-time.After(30 * time.Second):
		t.Fatal("the receiver got no notification")
	}
	return notifyRequest{}
}

// webhookEnv is a manager with a host delegate, notifications allowed to
// loopback with short retries, and the secret NOTIFY_KEY.
func webhookEnv(t *testing.T) *env {
	e := newEnv(t, func(c *Config) {
		c.Secrets = scheduler.SecretMap{"NOTIFY_KEY": "notify-signing-secret"}
		c.Webhooks.NotifyAllowPrivate = true
		c.Webhooks.NotifyRetryInterval = 50 * time.Millisecond
		c.Webhooks.ExternalURL = "https://ci.example.com"
		c.Webhooks.MaxBody = 64 << 10
	})
	if err := e.s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	return e
}

// rotateSecret makes a new hook secret for pipeline and returns it.
func (e *env) rotateSecret(pipeline, previousValidFor string) string {
	e.t.Helper()
	var h client.HookSecret
	e.must(http.StatusCreated, "POST", "/api/v1/pipelines/"+pipeline+"/hook-secret", testAdmin,
		&client.HookSecretRequest{PreviousValidFor: previousValidFor}, &h)
	if h.Secret == "" || h.HookURL != "/api/v1/hooks/"+pipeline {
		e.t.Fatalf("rotation = %+v", h)
	}
	return h.Secret
}

func (e *env) deliveries(pipeline string) []*client.Delivery {
	e.t.Helper()
	var l client.DeliveryList
	e.must(http.StatusOK, "GET", "/api/v1/pipelines/"+pipeline+"/deliveries", testAdmin, nil, &l)
	return l.Deliveries
}

func (e *env) runCount() int {
	e.t.Helper()
	var l client.RunList
	e.must(http.StatusOK, "GET", "/api/v1/runs", testAdmin, nil, &l)
	return len(l.Items)
}

// TestHookStartsRun: a GitHub push signed with the pipeline's secret
// starts a run on the pushed branch for event push; the stage whose when
// names another branch is skipped. A wrong, a missing and a replayed
// signature start nothing, are refused and recorded; redelivering the
// accepted one starts a second run.
func TestHookStartsRun(t *testing.T) {
	e := webhookEnv(t)
	e.startHostDelegate()
	e.createPipeline(&client.PipelineSpec{Name: "web", Config: "stages:\n  - name: build\n    steps: [{name: s, commands: [\"true\"]}]\n" +
		"  - name: release\n    when: {branch: [release]}\n    steps: [{name: r, commands: [\"true\"]}]\n",
		Triggers: &client.PipelineTriggers{Webhook: &client.WebhookTrigger{}}})
	secret := e.rotateSecret("web", "")
	push, err := os.ReadFile(filepath.Join("hooks", "testdata", "github-push.json"))
	if err != nil {
		t.Fatal(err)
	}
	status, hdr, b := e.hook("web", push, "X-GitHub-Event", "push", "X-GitHub-Delivery", "gh-1", "X-Hub-Signature-256", "sha256="+hookHMAC(secret, push))
	var d client.Delivery
	if status != http.StatusCreated || json.Unmarshal(b, &d) != nil || d.State != "accepted" || d.RunID == "" || hdr.Get("X-Errand-Delivery") != d.ID {
		t.Fatalf("signed push = %d %s", status, b)
	}
	run := e.waitRun(d.RunID, "finished", finished)
	if run.Branch != "main" || run.Event != "push" || run.Pipeline != "web" || run.Trigger == nil || run.Trigger.Kind != "webhook" ||
		run.Trigger.Commit != "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c" {
		t.Errorf("run = branch %q event %q pipeline %q trigger %+v", run.Branch, run.Event, run.Pipeline, run.Trigger)
	}
	if st := stage(run, "release"); st == nil || st.State != "skipped" {
		t.Errorf("release stage on main = %+v, want skipped", st)
	}
	runs := e.runCount()
	for _, c := range []struct {
		name    string
		headers []string
	}{
		{"wrong secret", []string{"X-Hub-Signature-256", "sha256=" + hookHMAC("not-it", push), "X-GitHub-Event", "push"}},
		{"no signature", []string{"X-GitHub-Event", "push"}},
		{"a bearer token only", []string{"Authorization", "Bearer " + testAdmin, "X-GitHub-Event", "push"}},
	} {
		status, hdr, b := e.hook("web", push, c.headers...)
		var eb httphelper.ErrorBody
		if status != http.StatusUnauthorized || json.Unmarshal(b, &eb) != nil || eb.Code != errand.CodeUnauthorized || hdr.Get("X-Errand-Delivery") == "" {
			t.Errorf("%s = %d %s", c.name, status, b)
		}
	}
	status, _, b = e.hook("web", push, "X-GitHub-Event", "push", "X-GitHub-Delivery", "gh-2", "X-Hub-Signature-256", "sha256="+hookHMAC(secret, push))
	if status != http.StatusConflict || !strings.Contains(string(b), "replay") {
		t.Errorf("replayed body = %d %s", status, b)
	}
	big := append([]byte(`{"ref":"main","x":"`), bytes.Repeat([]byte("x"), 70<<10)...)
	if status, _, _ := e.hook("web", big, "X-Errand-Signature-256", "sha256="+hookHMAC(secret, big)); status != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized = %d, want 413", status)
	}
	if n := e.runCount(); n != runs {
		t.Errorf("refused deliveries started runs: %d, then %d", runs, n)
	}
	list := e.deliveries("web")
	states := []string{}
	for _, d := range list {
		states = append(states, d.State)
	}
	if strings.Join(states, ",") != "refused,refused,refused,refused,refused,accepted" {
		t.Fatalf("deliveries (newest first) = %v", states)
	}
	if list[1].ReplayOf != d.ID || list[0].StatusCode != 413 {
		t.Errorf("replay = %+v, oversized = %+v", list[1], list[0])
	}
	var again client.Delivery
	e.must(http.StatusCreated, "POST", "/api/v1/pipelines/web/deliveries/"+d.ID+"/redeliver", testAdmin, nil, &again)
	if again.RedeliveryOf != d.ID || again.RunID == "" || again.RunID == d.RunID {
		t.Errorf("redelivery = %+v", again)
	}
	e.fails(http.StatusConflict, errand.CodeConflict, "POST", "/api/v1/pipelines/web/deliveries/"+list[2].ID+"/redeliver", testAdmin, nil)
	e.fails(http.StatusNotFound, errand.CodeNotFound, "POST", "/api/v1/pipelines/other/deliveries/"+d.ID+"/redeliver", testAdmin, nil)
	// An unknown pipeline is answered as a bad signature.
	if status, _, _ := e.hook("nope", push, "X-Hub-Signature-256", "sha256="+hookHMAC(secret, push)); status != http.StatusUnauthorized {
		t.Errorf("unknown pipeline = %d, want 401", status)
	}
}

// TestHookSecretRotation: both secrets verify during the switch; ending
// the previous one leaves the new one only.
func TestHookSecretRotation(t *testing.T) {
	e := webhookEnv(t)
	e.createPipeline(&client.PipelineSpec{Name: "api", Config: "stages:\n  - name: a\n    approval: {approvers: 1}\n    steps: [{name: s, commands: [\"true\"]}]\n",
		Triggers: &client.PipelineTriggers{Webhook: &client.WebhookTrigger{}}})
	old := e.rotateSecret("api", "")
	cur := e.rotateSecret("api", "1h")
	n := 0
	send := func(secret string) int {
		n++
		body := []byte(`{"ref":"refs/heads/main","commit":"c` + strings.Repeat("a", n) + `"}`)
		status, _, _ := e.hook("api", body, "X-Errand-Signature-256", "sha256="+hookHMAC(secret, body))
		return status
	}
	if send(old) != http.StatusCreated || send(cur) != http.StatusCreated {
		t.Fatal("during the switch both secrets must verify")
	}
	var h client.HookSecret
	e.must(http.StatusOK, "DELETE", "/api/v1/pipelines/api/hook-secret/previous", testAdmin, nil, &h)
	if h.Previous || h.Secret != "" {
		t.Errorf("after ending the previous one: %+v", h)
	}
	if send(old) != http.StatusUnauthorized || send(cur) != http.StatusCreated {
		t.Error("after ending the previous secret only the new one verifies")
	}
	e.fails(http.StatusNotFound, errand.CodeNotFound, "POST", "/api/v1/pipelines/nope/hook-secret", testAdmin, nil)
	e.fails(http.StatusBadRequest, errand.CodeInvalid, "POST", "/api/v1/pipelines/api/hook-secret", testAdmin, `{"previous_valid_for":"forever"}`)
}

// TestRunNotifications: a run's end is told to the pipeline's webhook,
// signed with its secret, again after the receiver answers 500; a stage
// waiting for approval is told too; both are listed with their attempts.
func TestRunNotifications(t *testing.T) {
	e := webhookEnv(t)
	e.startHostDelegate()
	rcv := newNotifyReceiver(t, http.StatusInternalServerError)
	e.createPipeline(&client.PipelineSpec{Name: "deploy", Config: "stages:\n  - name: build\n    steps: [{name: s, commands: [\"exit 3\"]}]\n",
		Triggers: &client.PipelineTriggers{Webhook: &client.WebhookTrigger{}},
		Notify:   []client.PipelineNotify{{Webhook: &client.NotifyWebhook{URL: rcv.srv.URL + "/errand", Secret: "NOTIFY_KEY", On: []string{"failure", "waiting"}}}}})
	secret := e.rotateSecret("deploy", "")
	body := []byte(`{"ref":"main","commit":"abc","variables":{"WHO":"ci"}}`)
	status, _, b := e.hook("deploy", body, "X-Errand-Signature-256", "sha256="+hookHMAC(secret, body))
	var d client.Delivery
	if status != http.StatusCreated || json.Unmarshal(b, &d) != nil {
		t.Fatalf("hook = %d %s", status, b)
	}
	first := rcv.next(t)
	if first.status != 500 {
		t.Fatalf("first attempt answered %d", first.status)
	}
	second := rcv.next(t)
	if !bytes.Equal(first.body, second.body) || second.header.Get("X-Errand-Signature-256") != "sha256="+hookHMAC("notify-signing-secret", second.body) {
		t.Fatalf("retry: signature %q over %s", second.header.Get("X-Errand-Signature-256"), second.body)
	}
	var n client.Notification
	if err := json.Unmarshal(second.body, &n); err != nil || n.Event != "run.finished" || n.Pipeline != "deploy" || n.Run.ID != d.RunID ||
		n.Run.Result != "failed" || n.URL != "https://ci.example.com/ui/runs/"+d.RunID || second.header.Get("X-Errand-Event") != "run.finished" {
		t.Fatalf("notification = %s (%v)", second.body, err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		var l client.DeliveryList
		e.must(http.StatusOK, "GET", "/api/v1/pipelines/deploy/deliveries?direction=notification", testAdmin, nil, &l)
		if len(l.Deliveries) == 1 && l.Deliveries[0].State == "delivered" {
			if got := l.Deliveries[0]; got.Attempts != 2 || got.StatusCode != 200 || got.RunID != d.RunID || got.Target != rcv.srv.URL+"/errand" {
				t.Errorf("notification delivery = %+v", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("notification deliveries = %+v", l.Deliveries)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A stage waiting for approval.
	var p client.Pipeline
	e.must(http.StatusOK, "PUT", "/api/v1/pipelines/deploy", testAdmin, &client.PipelineSpec{Config: "stages:\n  - name: prod\n    approval: {approvers: 1}\n    steps: [{name: s, commands: [\"true\"]}]\n",
		Triggers: &client.PipelineTriggers{Webhook: &client.WebhookTrigger{}},
		Notify:   []client.PipelineNotify{{Webhook: &client.NotifyWebhook{URL: rcv.srv.URL + "/errand", Secret: "NOTIFY_KEY", On: []string{"waiting"}}}}}, &p)
	body = []byte(`{"ref":"main","commit":"def"}`)
	if status, _, b := e.hook("deploy", body, "X-Errand-Signature-256", "sha256="+hookHMAC(secret, body)); status != http.StatusCreated {
		t.Fatalf("hook = %d %s", status, b)
	}
	waiting := rcv.next(t)
	if err := json.Unmarshal(waiting.body, &n); err != nil || n.Event != "stage.waiting" || n.Stage != "prod" {
		t.Fatalf("waiting notification = %s", waiting.body)
	}
	// Redelivering a notification sends it again.
	var l client.DeliveryList
	e.must(http.StatusOK, "GET", "/api/v1/pipelines/deploy/deliveries?direction=notification&limit=1", testAdmin, nil, &l)
	var again client.Delivery
	e.must(http.StatusAccepted, "POST", "/api/v1/pipelines/deploy/deliveries/"+l.Deliveries[0].ID+"/redeliver", testAdmin, nil, &again)
	if re := rcv.next(t); re.header.Get("X-Errand-Delivery") != again.ID {
		t.Errorf("redelivered notification carries delivery %q, want %q", re.header.Get("X-Errand-Delivery"), again.ID)
	}
}

// hookFixture gives the route fixture's pipeline a hook secret and a
// delivery it accepted.
func (f *routeFixture) hookFixture(t testing.TB) {
	t.Helper()
	var h client.HookSecret
	f.e.must(http.StatusCreated, "POST", "/api/v1/pipelines/"+f.stageName+"/hook-secret", testAdmin, nil, &h)
	f.hookSecret = h.Secret
	body := []byte(`{"ref":"main","commit":"fixture"}`)
	status, _, b := f.e.hook(f.stageName, body, "X-Errand-Signature-256", "sha256="+hookHMAC(h.Secret, body))
	var d client.Delivery
	if status != http.StatusCreated || json.Unmarshal(b, &d) != nil {
		t.Fatalf("fixture delivery = %d %s", status, b)
	}
	f.deliveryID = d.ID
}

// sendSigned checks that a delivery signed with the pipeline's secret,
// and no bearer token, is served.
func (f *routeFixture) sendSigned(t testing.TB, path string) {
	t.Helper()
	body := []byte(`{"ref":"main","commit":"signed-` + strings.ReplaceAll(path, "/", "-") + `"}`)
	req, err := http.NewRequest("POST", f.e.ts.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Errand-Signature-256", "sha256="+hookHMAC(f.hookSecret, body))
	resp, err := f.e.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Errorf("POST %s signed = %d, want 201", path, resp.StatusCode)
	}
}
