package manager

import (
	"net/http"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/errandci/errand/client"
	"github.com/errandci/errand/manager/web/webtest"
)

// userToken creates the user name with role and returns a token of it.
func (e *env) userToken(name, role string) string {
	e.t.Helper()
	e.must(http.StatusCreated, "POST", "/api/v1/users", testAdmin, &client.UserRequest{Name: name, Role: role}, nil)
	var tok client.Token
	e.must(http.StatusCreated, "POST", "/api/v1/tokens", testAdmin, &client.TokenRequest{Name: "web", User: name}, &tok)
	return tok.Secret
}

// TestWebApprovalsByUsers signs in with user tokens in a real browser:
// a stage needing two approvals is released by two users, each in their
// own session; the same user approving twice is refused, and so is a
// viewer; a revoked token starts no session.
func TestWebApprovalsByUsers(t *testing.T) {
	e := newEnv(t)
	browser := webtest.New(t)
	base := e.ts.URL
	alice, bob, vera := e.userToken("alice", "operator"), e.userToken("bob", "operator"), e.userToken("vera", "viewer")
	run := e.submit("stages:\n  - name: deploy\n    approval: {approvers: 2}\n    steps: [{name: ship, commands: [\"true\"]}]\n")

	signIn := func(b *webtest.Browser, token string) {
		b.Do(browserWait,
			chromedp.Navigate(base+"/"),
			chromedp.WaitVisible(chromedp.CSS("#token")),
			chromedp.SendKeys(chromedp.CSS("#token"), token),
			chromedp.Click(chromedp.CSS("#signin")),
		)
	}
	signOut := func(b *webtest.Browser) {
		b.Do(browserWait, chromedp.Click(chromedp.CSS("form.signout button")), chromedp.WaitVisible(chromedp.CSS("#token")))
	}
	// approve presses deploy's approve button and returns the page then
	// shown: the run's approval line, or the error page's message.
	approve := func(b *webtest.Browser) string {
		b.Do(browserWait, chromedp.Navigate(base+"/ui/runs/"+run.ID), chromedp.WaitVisible(chromedp.CSS("#stage-deploy button.approve")),
			chromedp.Evaluate[chromedp.Void](`window.before = true`),
			chromedp.Click(chromedp.CSS("#stage-deploy button.approve")))
		webtest.WaitTrue(b, browserWait, `window.before === undefined && document.readyState === "complete"`)
		return webtest.Eval[string](b, `(document.querySelector("#error-message") || document.querySelector("#stage-deploy .approval")).textContent`)
	}

	t.Run("alice approves", func(t *testing.T) {
		b := browser.For(t)
		signIn(b, alice)
		b.Do(browserWait, chromedp.WaitVisible(chromedp.CSS("#runs")))
		if who := webtest.Eval[string](b, `document.querySelector(".who").textContent`); who != "alice (operator)" {
			t.Errorf("signed in as %q, want alice (operator)", who)
		}
		if got := approve(b); !strings.Contains(got, "1 of 2") {
			t.Errorf("after alice's approval the page reads %q, want 1 of 2", got)
		}
		if got := approve(b); !strings.Contains(got, "alice has already approved") {
			t.Errorf("alice approving again reads %q, want the refusal", got)
		}
		if st := stage(e.getRun(run.ID), "deploy"); st.State != "waiting" || strings.Join(st.Approvals, ",") != "alice" {
			t.Errorf("deploy is %s with approvals %v, want waiting with alice's", st.State, st.Approvals)
		}
		signOut(b)
	})

	t.Run("a viewer may not approve", func(t *testing.T) {
		b := browser.For(t)
		signIn(b, vera)
		b.Do(browserWait, chromedp.WaitVisible(chromedp.CSS("#runs")), chromedp.Navigate(base+"/ui/runs/"+run.ID), chromedp.WaitVisible(chromedp.CSS("#stage-deploy")))
		if n := webtest.Eval[int](b, `document.querySelectorAll("#stage-deploy button.approve").length`); n != 0 {
			t.Errorf("a viewer sees %d approve buttons", n)
		}
		// The form sent anyway, with the viewer's own CSRF token.
		b.Do(browserWait, chromedp.Evaluate[chromedp.Void](`(function(){var f=document.createElement("form"); f.method="post";
			f.action="/ui/runs/`+run.ID+`/stages/deploy/approve"; var c=document.createElement("input"); c.type="hidden"; c.name="csrf";
			c.value=document.querySelector("form.signout input[name=csrf]").value; f.appendChild(c); document.body.appendChild(f); f.submit()})()`),
			chromedp.WaitVisible(chromedp.CSS("#error-message")))
		title := webtest.Get(b, browserWait, chromedp.Text(chromedp.CSS("#error-title")))
		msg := webtest.Get(b, browserWait, chromedp.Text(chromedp.CSS("#error-message")))
		if !strings.Contains(title, "403") || !strings.Contains(msg, "operator role") || !strings.Contains(msg, "vera") {
			t.Errorf("a viewer's approval: %q / %q, want 403 naming the operator role", title, msg)
		}
		b.Do(browserWait, chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS("#runs")))
		signOut(b)
	})

	t.Run("bob releases the stage", func(t *testing.T) {
		b := browser.For(t)
		signIn(b, bob)
		b.Do(browserWait, chromedp.WaitVisible(chromedp.CSS("#runs")))
		b.Do(browserWait, chromedp.Navigate(base+"/ui/runs/"+run.ID), chromedp.Click(chromedp.CSS("#stage-deploy button.approve")),
			chromedp.WaitNotPresent(chromedp.CSS("#stage-deploy button.approve")))
		if st := stage(e.getRun(run.ID), "deploy"); st.State == "waiting" || strings.Join(st.Approvals, ",") != "alice,bob" {
			t.Errorf("deploy is %s with approvals %v, want released by alice and bob", st.State, st.Approvals)
		}
		signOut(b)
	})

	t.Run("a revoked token starts no session", func(t *testing.T) {
		b := browser.For(t)
		var list client.TokenList
		e.must(http.StatusOK, "GET", "/api/v1/tokens?user=bob", testAdmin, nil, &list)
		if len(list.Tokens) != 1 {
			t.Fatalf("bob has %d tokens", len(list.Tokens))
		}
		e.must(http.StatusOK, "DELETE", "/api/v1/tokens/"+list.Tokens[0].ID, testAdmin, nil, nil)
		signIn(b, bob)
		b.Do(browserWait, chromedp.WaitVisible(chromedp.CSS("#problem")))
		msg := webtest.Get(b, browserWait, chromedp.Text(chromedp.CSS("#problem")))
		if !strings.Contains(msg, "revoked") || !strings.Contains(msg, "no session") {
			t.Errorf("sign-in with a revoked token: %q", msg)
		}
		b.Do(browserWait, chromedp.Navigate(base+"/ui/tasks"), chromedp.WaitVisible(chromedp.CSS("#token")))
	})
}
