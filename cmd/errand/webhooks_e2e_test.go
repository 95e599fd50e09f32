package main

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
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/errandci/errand/client"
	"github.com/errandci/errand/internal/testenv"
)

// TestE2EWebhooks: through the binary, a pipeline's hook secret is
// rotated, a signed delivery starts a run and a wrong one is refused and
// recorded, the deliveries are listed and one is redelivered, and the
// stage that waits for approval is notified to a receiver on loopback,
// again after it answered 500.
func TestE2EWebhooks(t *testing.T) {
	bin := testenv.Binary(t)
	got := make(chan []byte, 10)
	statuses := []int{http.StatusInternalServerError}
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		status := http.StatusOK
		if len(statuses) > 0 {
			status, statuses = statuses[0], statuses[1:]
		}
		w.WriteHeader(status)
		got <- b
	}))
	defer rcv.Close()
	t.Setenv("ERRAND_SECRET_NOTIFY_KEY", "e2e-notify-secret")
	m := testenv.StartManager(t, bin, "--notify-allow-private", "--notify-retry-interval", "100ms", "--notify-attempts", "3",
		"--notify-timeout", "5s", "--max-hook-body", "2048", "--hook-replay-window", "1h", "--keep-deliveries", "50",
		"--external-url", "https://ci.example.com")
	errand := func(wantCode int, args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(cmd.Environ(), "ERRAND_MANAGER="+m.URL, "ERRAND_TOKEN="+m.AdminToken)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != wantCode {
			t.Fatalf("errand %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, wantCode, stdout.String(), stderr.String())
		}
		return stdout.String() + stderr.String()
	}
	c := testenv.Client(t, m.URL, m.AdminToken)
	if _, err := c.CreatePipeline(context.Background(), &client.PipelineSpec{Name: "site",
		Config:   "stages:\n  - name: prod\n    approval: {approvers: 1}\n    steps: [{name: s, commands: [\"true\"]}]\n",
		Triggers: &client.PipelineTriggers{Webhook: &client.WebhookTrigger{}},
		Notify:   []client.PipelineNotify{{Webhook: &client.NotifyWebhook{URL: rcv.URL + "/n", Secret: "NOTIFY_KEY", On: []string{"waiting"}}}}}); err != nil {
		t.Fatal(err)
	}
	out := errand(0, "pipelines", "rotate-secret", "site")
	secret := regexp.MustCompile(`(?m)^Secret: +(\S+)$`).FindStringSubmatch(out)
	if secret == nil || !strings.Contains(out, "shown this once") || !strings.Contains(out, m.URL+"/api/v1/hooks/site") {
		t.Fatalf("rotate-secret printed:\n%s", out)
	}
	var rotated client.HookSecret
	if err := json.Unmarshal([]byte(errand(0, "pipelines", "rotate-secret", "site", "--previous-valid-for", "1h", "-o", "json")), &rotated); err != nil ||
		!rotated.Previous || rotated.Secret == "" {
		t.Fatalf("rotate-secret -o json: %+v, %v", rotated, err)
	}
	send := func(secret string, body string) int {
		t.Helper()
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write([]byte(body))
		req, _ := http.NewRequest("POST", m.URL+"/api/v1/hooks/site", strings.NewReader(body))
		req.Header.Set("X-Errand-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// The first secret still verifies during the switch.
	if code := send(secret[1], `{"ref":"refs/heads/main","commit":"a1"}`); code != http.StatusCreated {
		t.Fatalf("delivery signed with the previous secret = %d", code)
	}
	if code := send("wrong-secret", `{"ref":"refs/heads/main","commit":"a2"}`); code != http.StatusUnauthorized {
		t.Fatalf("wrong signature = %d", code)
	}
	if code := send(rotated.Secret, `{"ref":"main","x":"`+strings.Repeat("y", 3000)+`"}`); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized = %d", code)
	}
	// The waiting stage is notified, again after the 500.
	var n client.Notification
	for i := 0; i < 2; i++ {
		select {
		case b := <-got:
			if err := json.Unmarshal(b, &n); err != nil || n.Event != "stage.waiting" || n.Stage != "prod" || n.Pipeline != "site" {
				t.Fatalf("notification %d = %s", i, b)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("notification %d never came", i)
		}
	}
	list := errand(0, "pipelines", "deliveries", "site")
	if !regexp.MustCompile(`(?m)^ID +AT +DIRECTION +SOURCE +EVENT +STATE +STATUS +RUN +REASON$`).MatchString(list) ||
		!regexp.MustCompile(`(?m) hook +generic +push +accepted +201 +`+n.Run.ID).MatchString(list) ||
		!regexp.MustCompile(`(?m) hook +generic +- +refused +401 +- .*does not match`).MatchString(list) ||
		!regexp.MustCompile(`(?m) hook +generic +- +refused +413 `).MatchString(list) ||
		!regexp.MustCompile(`(?m) notification +webhook +stage.waiting +`).MatchString(list) {
		t.Fatalf("deliveries:\n%s", list)
	}
	var l client.DeliveryList
	if err := json.Unmarshal([]byte(errand(0, "pipelines", "deliveries", "site", "--limit", "2", "-o", "json")), &l); err != nil || len(l.Deliveries) != 2 || l.Before == "" {
		t.Fatalf("deliveries --limit 2: %+v, %v", l, err)
	}
	var older client.DeliveryList
	if err := json.Unmarshal([]byte(errand(0, "pipelines", "deliveries", "site", "--before", l.Before, "-o", "json")), &older); err != nil || len(older.Deliveries) < 2 {
		t.Fatalf("deliveries --before: %+v, %v", older, err)
	}
	var accepted *client.Delivery
	for _, d := range append(l.Deliveries, older.Deliveries...) {
		if d.Direction == "hook" && d.State == "accepted" {
			accepted = d
		}
	}
	if accepted == nil {
		t.Fatalf("no accepted delivery in %+v %+v", l.Deliveries, older.Deliveries)
	}
	out = errand(0, "pipelines", "redeliver", "site", accepted.ID)
	if !regexp.MustCompile(`(?m)^Redelivery of: +`+accepted.ID+`$`).MatchString(out) || !regexp.MustCompile(`(?m)^State: +accepted$`).MatchString(out) {
		t.Errorf("redeliver printed:\n%s", out)
	}
	if out := errand(1, "pipelines", "redeliver", "site", "no-such-delivery"); !strings.Contains(out, "not_found") {
		t.Errorf("redeliver an unknown delivery: %s", out)
	}
	if out := errand(1, "pipelines", "deliveries", "no-such-pipeline"); !strings.Contains(out, "not_found") {
		t.Errorf("deliveries of an unknown pipeline: %s", out)
	}
	if out := errand(0, "pipelines", "rotate-secret", "site", "--end-previous"); !regexp.MustCompile(`(?m)^Previous: +none$`).MatchString(out) {
		t.Errorf("--end-previous printed:\n%s", out)
	}
	if code := send(secret[1], `{"ref":"refs/heads/main","commit":"a3"}`); code != http.StatusUnauthorized {
		t.Errorf("the first secret after --end-previous = %d, want 401", code)
	}
	if out := errand(1, "pipelines", "rotate-secret", "site", "--previous-valid-for=-1h"); !strings.Contains(out, "negative") {
		t.Errorf("a negative --previous-valid-for: %s", out)
	}
}
