package manager

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/manager/web/webtest"
)

// Browser tests: a real Chromium (webtest) drives the web UI of a
// manager served on loopback. They share one manager and one browser and
// run in order: sign-in first.

const browserWait = 15 * time.Second

// leasedTask creates a task and leases it to d; the task is running.
func (e *env) leasedTask(d delegate) (id, lease string) {
	e.t.Helper()
	id = e.create(&client.TaskSpec{Type: "x"}).ID
	a := e.acquire(d, "max=1")
	if len(a.Tasks) != 1 || a.Tasks[0].ID != id {
		e.t.Fatalf("acquired %+v, want task %s", a.Tasks, id)
	}
	lease = a.Tasks[0].Lease.Token
	e.must(http.StatusOK, "POST", "/api/v1/tasks/"+id+"/status", d.token, map[string]any{"lease": lease, "state": "running"}, nil)
	return id, lease
}

func (e *env) appendLines(d delegate, id, lease string, offset int, lines []string) {
	e.t.Helper()
	e.must(http.StatusOK, "POST", "/api/v1/tasks/"+id+"/logs", d.token, map[string]any{"lease": lease, "offset": offset, "lines": lines}, nil)
}

func (e *env) succeed(d delegate, id, lease string) {
	e.t.Helper()
	e.must(http.StatusOK, "POST", "/api/v1/tasks/"+id+"/status", d.token, map[string]any{"lease": lease, "state": "succeeded"}, nil)
}

func numbered(from, to int, format string) []string {
	out := make([]string, 0, to-from)
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf(format, i+1))
	}
	return out
}

func TestWebUIInBrowser(t *testing.T) {
	e := newEnv(t)
	browser := webtest.New(t)
	b := browser
	base := e.ts.URL
	// The delegate takes only the tasks the tests make, not the runs'.
	d := e.register("d1", &client.RegisterRequest{Name: "d1", TaskTypes: []string{"x"}})

	signIn := func(b *webtest.Browser, token string) {
		b.Do(browserWait,
			chromedp.Navigate(base+"/"),
			chromedp.WaitVisible(chromedp.CSS("#token")),
			chromedp.SendKeys(chromedp.CSS("#token"), token),
			chromedp.Click(chromedp.CSS("#signin")),
		)
	}

	t.Run("wrong token", func(t *testing.T) {
		b := browser.For(t)
		signIn(b, "not-the-token")
		b.Do(browserWait, chromedp.WaitVisible(chromedp.CSS("#problem")))
		msg := webtest.Get(b, browserWait, chromedp.Text(chromedp.CSS("#problem")))
		if !strings.Contains(msg, "not valid") || !strings.Contains(msg, "no session") {
			t.Errorf("sign-in problem = %q", msg)
		}
		// No session: a page sends the browser back to the sign-in form.
		b.Do(browserWait, chromedp.Navigate(base+"/ui/delegates"), chromedp.WaitVisible(chromedp.CSS("#token")))
	})

	t.Run("sign in", func(t *testing.T) {
		b := browser.For(t)
		signIn(b, testAdmin)
		b.Do(browserWait, chromedp.WaitVisible(chromedp.CSS("#runs")))
		if c := webtest.Eval[string](b, "document.cookie"); strings.Contains(c, "errand_session") {
			t.Errorf("the session cookie is readable by scripts: %q", c)
		}
	})

	var runID string
	t.Run("submit a run", func(t *testing.T) {
		b := browser.For(t)
		config := "stages:\n  - name: build\n    steps: [{name: compile, commands: [\"true\"]}]\n" +
			"  - name: test\n    depends: [build]\n    steps: [{name: unit, commands: [\"true\"]}]\n" +
			"  - name: deploy\n    approval: {approvers: 1}\n    steps: [{name: ship, commands: [\"true\"]}]\n"
		b.Do(browserWait,
			chromedp.Navigate(base+"/ui/runs/new"),
			chromedp.WaitVisible(chromedp.CSS("#config")),
			chromedp.SetValue(chromedp.CSS("#config"), config),
			chromedp.Click(chromedp.CSS("#submit-run")),
			chromedp.WaitVisible(chromedp.CSS("#stage-deploy")),
		)
		loc := webtest.Get(b, browserWait, chromedp.Location())
		runID = loc[strings.LastIndex(loc, "/")+1:]
		if run := e.getRun(runID); len(run.Stages) != 3 {
			t.Fatalf("run %s has %d stages", runID, len(run.Stages))
		}
		if dep := webtest.Eval[string](b, `document.querySelector("#stage-test .needs").textContent`); !strings.Contains(dep, "build") {
			t.Errorf("test's dependencies read %q", dep)
		}
		// One line drawn, from build's right edge to test's left edge.
		edge := webtest.Eval[[]float64](b, `(function(){var p=document.querySelectorAll(".graph svg.edges path"); if (p.length!==1) return [p.length];
			var g=document.querySelector(".graph").getBoundingClientRect(), a=document.querySelector("#stage-build").getBoundingClientRect(), z=document.querySelector("#stage-test").getBoundingClientRect();
			var m=p[0].getAttribute("d").match(/^M([\d.]+),[\d.]+ .* ([\d.]+),[\d.]+$/); return [1, +m[1]-(a.right-g.left), +m[2]-(z.left-g.left)]})()`)
		if len(edge) != 3 || edge[1] < -1 || edge[1] > 1 || edge[2] < -1 || edge[2] > 1 {
			t.Errorf("dependency lines: %v, want one from build to test", edge)
		}
		b.Do(browserWait, chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS(`#runs a[href="/ui/runs/`+runID+`"]`)))

		// The list updates itself: a run submitted elsewhere appears
		// without a reload.
		b.Do(browserWait, chromedp.Evaluate[chromedp.Void](`window.sameDocument = true`))
		other := e.submit("stages:\n  - name: a\n    steps: [{name: s, commands: [\"true\"]}]\n").ID
		webtest.WaitTrue(b, browserWait, `!!document.querySelector('#runs a[href="/ui/runs/`+other+`"]') && window.sameDocument === true`)
	})

	t.Run("approve a stage", func(t *testing.T) {
		b := browser.For(t)
		b.Do(browserWait, chromedp.Navigate(base+"/ui/runs/"+runID), chromedp.WaitVisible(chromedp.CSS("#stage-deploy .approval")))
		if got := webtest.Eval[string](b, `document.querySelector("#stage-deploy .approval").textContent`); !strings.Contains(got, "0 of 1") {
			t.Errorf("approval reads %q before approving", got)
		}
		b.Do(browserWait, chromedp.Click(chromedp.CSS("#stage-deploy button.approve")),
			chromedp.WaitNotPresent(chromedp.CSS("#stage-deploy button.approve")))
		if got := webtest.Eval[string](b, `document.querySelector("#stage-deploy .approval").textContent`); !strings.Contains(got, "1 of 1") {
			t.Errorf("approval reads %q after approving", got)
		}
		for _, st := range e.getRun(runID).Stages {
			if st.Name == "deploy" && (st.State == "waiting" || len(st.Approvals) != 1) {
				t.Errorf("deploy is %s with approvals %v", st.State, st.Approvals)
			}
		}
	})

	t.Run("cancel a run", func(t *testing.T) {
		b := browser.For(t)
		b.Do(browserWait, chromedp.Navigate(base+"/ui/runs/"+runID), chromedp.Click(chromedp.CSS("#cancel-run")),
			chromedp.WaitNotPresent(chromedp.CSS("#cancel-run")))
		if run := e.getRun(runID); run.CancelledAt == nil {
			t.Errorf("run %s is not cancelled: %+v", runID, run)
		}
	})

	var liveID string
	t.Run("log streams live", func(t *testing.T) {
		b := browser.For(t)
		id, lease := e.leasedTask(d)
		liveID = id
		b.Do(browserWait, chromedp.Navigate(base+"/ui/tasks/"+id), chromedp.WaitVisible(chromedp.CSS(".lv-scroll")))
		webtest.WaitTrue(b, browserWait, `window.errandLog && window.errandLog.mode === "live"`)
		e.appendLines(d, id, lease, 0, []string{"first line"})
		webtest.WaitTrue(b, browserWait, `!!document.querySelector("#L1") && document.querySelector("#L1").textContent.includes("first line")`)
		hostile := "\x1b[31mred\x1b[0m <script>window.pwned=1</script> <img src=x onerror=\"window.pwned=2\"> &amp; \x1b[1;32mbold"
		e.appendLines(d, id, lease, 1, []string{hostile, "\x1b[0;33mcarried", "still yellow\x1b[0m", "50%\r100%"})
		webtest.WaitTrue(b, browserWait, `!!document.querySelector("#L5")`)
		if got := webtest.Eval[string](b, `document.querySelector("#L2").textContent`); !strings.Contains(got, `red <script>window.pwned=1</script> <img src=x onerror="window.pwned=2"> &amp; bold`) {
			t.Errorf("line 2 reads %q", got)
		}
		if n := webtest.Eval[int](b, `document.querySelectorAll(".lv-rows script, .lv-rows img").length`); n != 0 {
			t.Errorf("%d elements made from a log line", n)
		}
		if v := webtest.Eval[string](b, `String(window.pwned)`); v != "undefined" {
			t.Errorf("a log line ran: window.pwned = %s", v)
		}
		if red := webtest.Eval[string](b, `document.querySelector("#L2 span.f1").textContent`); red != "red" {
			t.Errorf("red span = %q", red)
		}
		if c := webtest.Eval[string](b, `document.querySelector("#L4 span").className`); c != "f3" {
			t.Errorf("a colour set on line 3 does not reach line 4: class %q", c)
		}
		if got := webtest.Eval[string](b, `document.querySelector("#L5").textContent`); !strings.HasSuffix(got, "100%") || strings.Contains(got, "50%") {
			t.Errorf("carriage return: line 5 reads %q", got)
		}

		// Follow mode: new lines keep the end in view; scrolled up, they
		// are counted instead.
		e.appendLines(d, id, lease, 5, numbered(5, 300, "line %d"))
		webtest.WaitTrue(b, browserWait, `!!document.querySelector("#L300")`)
		b.Do(browserWait, chromedp.Evaluate[chromedp.Void](`document.querySelector(".lv-scroll").scrollTop = 0`))
		webtest.WaitTrue(b, browserWait, `window.errandLog.follow === false`)
		e.appendLines(d, id, lease, 300, numbered(300, 305, "line %d"))
		webtest.WaitTrue(b, browserWait, `!document.querySelector(".lv-jump").hidden && document.querySelector(".lv-jump").textContent.startsWith("5 new lines")`)
		b.Do(browserWait, chromedp.Click(chromedp.CSS(".lv-jump")))
		webtest.WaitTrue(b, browserWait, `!!document.querySelector("#L305") && window.errandLog.follow`)

		// An escape cut at the end of a line is finished by the next.
		e.appendLines(d, id, lease, 305, []string{"split \x1b[3", "4mblue\x1b[0m"})
		webtest.WaitTrue(b, browserWait, `!!document.querySelector("#L307")`)
		if got := webtest.Eval[string](b, `document.querySelector("#L307 span.f4").textContent`); got != "blue" {
			t.Errorf("blue span = %q", got)
		}
		if got := webtest.Eval[string](b, `document.querySelector("#L306").textContent`); !strings.HasSuffix(got, "split ") {
			t.Errorf("line 306 reads %q", got)
		}

		e.succeed(d, id, lease)
		webtest.WaitTrue(b, browserWait, `window.errandLog.complete && document.querySelector("#task-state").textContent === "succeeded"`)
	})

	t.Run("delegates", func(t *testing.T) {
		b := browser.For(t)
		busy, _ := e.leasedTask(d)
		defer e.must(http.StatusNoContent, "POST", "/api/v1/tasks/"+busy+"/cancel", testAdmin, nil, nil)
		b.Do(browserWait, chromedp.Navigate(base+"/ui/delegates"), chromedp.WaitVisible(chromedp.CSS("#delegates")))
		row := webtest.Eval[string](b, `document.querySelector("#delegates tbody tr").textContent`)
		for _, want := range []string{"d1", "active"} {
			if !strings.Contains(row, want) {
				t.Errorf("delegate row %q lacks %q", row, want)
			}
		}
		if n := webtest.Eval[string](b, `document.querySelector("#delegates td.running").textContent`); n != "1" {
			t.Errorf("running = %q, want 1", n)
		}
		// Drain another delegate: d1 goes on taking the tests' tasks.
		d2 := e.register("d2", &client.RegisterRequest{Name: "d2", TaskTypes: []string{"y"}})
		row2 := `#delegate-` + d2.id
		b.Do(browserWait, chromedp.Navigate(base+"/ui/delegates"), chromedp.Click(chromedp.CSS(row2+" button")))
		webtest.WaitTrue(b, browserWait, `!!document.querySelector("`+row2+`") && !document.querySelector("`+row2+` button") && document.querySelector("`+row2+`").textContent.includes("drain")`)
		if got, err := e.s.sched.Delegate(context.Background(), d2.id); err != nil || !got.DrainRequested && got.State != errand.DelegateDraining {
			t.Errorf("delegate after drain: %+v %v", got, err)
		}
	})

	t.Run("line link", func(t *testing.T) {
		b := browser.For(t)
		b.Do(browserWait, chromedp.Navigate(base+"/ui/tasks/"+liveID+"#L100-120"))
		webtest.WaitTrue(b, browserWait, `!!document.querySelector("#L100.lv-sel") && !!document.querySelector("#L120.lv-sel") && !document.querySelector("#L121.lv-sel")`)
		visible := webtest.Eval[bool](b, `(function(){var r=document.querySelector("#L100").getBoundingClientRect(), s=document.querySelector(".lv-scroll").getBoundingClientRect(); return r.top>=s.top && r.bottom<=s.bottom})()`)
		if !visible {
			t.Errorf("#L100 is not in view")
		}
	})

	t.Run("search", func(t *testing.T) {
		b := browser.For(t)
		b.Do(browserWait, chromedp.SendKeys(chromedp.CSS(".lv-search"), "line 42\r"))
		webtest.WaitTrue(b, browserWait, `document.querySelector(".lv-matches").textContent === "1 of 1" && !!document.querySelector("#L42.lv-hit")`)
	})

	t.Run("200000 lines", func(t *testing.T) {
		b := browser.For(t)
		const total = 200000
		id, lease := e.leasedTask(d)
		for off := 0; off < total; off += 100000 {
			e.appendLines(d, id, lease, off, numbered(off, off+100000, "row %d of the big log"))
		}
		e.succeed(d, id, lease)
		b.Do(browserWait, chromedp.Navigate(base+"/ui/tasks/"+id))
		webtest.WaitTrue(b, 30*time.Second, `window.errandLog && window.errandLog.complete && !!document.querySelector("#L200000")`)
		lastVisible := `(function(){var r=document.querySelector("#L200000").getBoundingClientRect(), s=document.querySelector(".lv-scroll").getBoundingClientRect(); return r.bottom<=s.bottom+1 && r.top>=s.top})()`
		webtest.WaitTrue(b, browserWait, lastVisible)
		if got := webtest.Eval[string](b, `document.querySelector("#L200000").textContent`); !strings.HasSuffix(got, "row 200000 of the big log") {
			t.Errorf("last line reads %q", got)
		}
		for webtest.Eval[int](b, `window.errandLog.base`) > 0 {
			b.Do(browserWait, chromedp.Click(chromedp.CSS(".lv-earlier")))
			webtest.WaitTrue(b, 30*time.Second, `!window.errandLog.loading`)
		}
		if n := webtest.Eval[int](b, `window.errandLog.raw.length`); n != total {
			t.Errorf("loaded %d lines, want %d", n, total)
		}
		b.Do(browserWait, chromedp.Evaluate[chromedp.Void](`document.querySelector(".lv-scroll").scrollTop = document.querySelector(".lv-scroll").scrollHeight / 2`))
		webtest.WaitTrue(b, browserWait, `!!document.querySelector("#L100000")`)
		if n := webtest.Eval[int](b, `document.querySelectorAll("#log *").length`); n > 2000 {
			t.Errorf("the log viewer holds %d elements with %d lines loaded: not bounded", n, total)
		}
		if n := webtest.Eval[int](b, `document.querySelectorAll(".lv-line").length`); n > 200 {
			t.Errorf("%d rows in the DOM", n)
		}
	})

	t.Run("form without CSRF token", func(t *testing.T) {
		b := browser.For(t)
		b.Do(browserWait, chromedp.Navigate(base+"/ui/tasks"), chromedp.WaitVisible(chromedp.CSS("#tasks")))
		status := webtest.Get(b, browserWait, chromedp.Evaluate[int](
			`fetch("/ui/runs/`+runID+`/cancel", {method: "POST", body: new URLSearchParams({x: "1"})}).then(r => r.status)`,
			chromedp.EvalAwaitPromise))
		if status != http.StatusForbidden {
			t.Errorf("POST without a CSRF token = %d, want 403", status)
		}
	})

	t.Run("unknown id", func(t *testing.T) {
		b := browser.For(t)
		for _, path := range []string{"/ui/runs/01NOTARUN", "/ui/tasks/01NOTATASK", "/ui/nothing-here"} {
			resp := webtest.Get(b, browserWait, chromedp.NavigateResponse(base+path))
			if resp.Status != http.StatusNotFound {
				t.Errorf("GET %s = %d, want 404", path, resp.Status)
			}
			if title := webtest.Get(b, browserWait, chromedp.Text(chromedp.CSS("#error-title"))); !strings.Contains(title, "404") {
				t.Errorf("GET %s shows %q", path, title)
			}
		}
	})

	t.Run("dark mode and phone width", func(t *testing.T) {
		b := browser.For(t)
		bg := `getComputedStyle(document.body).backgroundColor`
		b.Do(browserWait, colorScheme("dark"), chromedp.Navigate(base+"/ui/runs/"+runID), chromedp.WaitVisible(chromedp.CSS("#stage-deploy")))
		if got := webtest.Eval[string](b, bg); got != "rgb(13, 17, 23)" {
			t.Errorf("dark background = %s", got)
		}
		b.Do(browserWait, colorScheme("light"))
		if got := webtest.Eval[string](b, bg); got != "rgb(255, 255, 255)" {
			t.Errorf("light background = %s", got)
		}
		b.Do(browserWait, chromedp.EmulateViewport(390, 800))
		defer b.Do(browserWait, chromedp.ResetViewport())
		for _, path := range []string{"/", "/ui/runs/" + runID, "/ui/tasks", "/ui/tasks/" + liveID, "/ui/delegates"} {
			b.Do(browserWait, chromedp.Navigate(base+path), chromedp.WaitReady(chromedp.CSS("main")))
			if w := webtest.Eval[int](b, `document.documentElement.scrollWidth`); w > 391 {
				t.Errorf("%s is %d px wide at a 390 px window", path, w)
			}
		}
	})

	// ERRAND_WEB_SCREENSHOTS=dir writes pictures of the run page and the
	// log viewer there (the README's).
	if dir := os.Getenv("ERRAND_WEB_SCREENSHOTS"); dir != "" {
		run := e.submit("stages:\n  - name: build\n    steps: [{name: compile, commands: [make]}, {name: vet, commands: [make vet]}]\n" +
			"  - name: test\n    depends: [build]\n    steps: [{name: unit, commands: [make test]}]\n" +
			"  - name: lint\n    depends: [build]\n    steps: [{name: lint, commands: [make lint]}]\n" +
			"  - name: deploy\n    depends: [test, lint]\n    approval: {approvers: 2}\n    steps: [{name: ship, commands: [./deploy]}]\n")
		b.Do(browserWait, chromedp.EmulateViewport(1200, 640), chromedp.Navigate(base+"/ui/runs/"+run.ID), chromedp.WaitVisible(chromedp.CSS("#stage-deploy")))
		if err := b.Screenshot(filepath.Join(dir, "web-run.png")); err != nil {
			t.Error(err)
		}
		b.Do(browserWait, chromedp.Navigate(base+"/ui/tasks/"+liveID+"#L1-5"))
		webtest.WaitTrue(b, browserWait, `window.errandLog && window.errandLog.complete`)
		if err := b.Screenshot(filepath.Join(dir, "web-log.png")); err != nil {
			t.Error(err)
		}
	}

	t.Run("polling without EventSource", func(t *testing.T) {
		b := browser.For(t)
		b.Do(browserWait, func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
			_, err := cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: "delete window.EventSource;"})
			return chromedp.Void{}, err
		})
		id, lease := e.leasedTask(d)
		e.appendLines(d, id, lease, 0, []string{"polled one"})
		b.Do(browserWait, chromedp.Navigate(base+"/ui/tasks/"+id))
		webtest.WaitTrue(b, browserWait, `window.errandLog && window.errandLog.mode === "polling" && !!document.querySelector("#L1")`)
		e.appendLines(d, id, lease, 1, []string{"polled two"})
		webtest.WaitTrue(b, browserWait, `!!document.querySelector("#L2") && document.querySelector("#L2").textContent.endsWith("polled two")`)
		e.succeed(d, id, lease)
		webtest.WaitTrue(b, browserWait, `window.errandLog.complete`)
	})
}

// colorScheme makes the page see prefers-color-scheme: scheme.
func colorScheme(scheme string) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := cdp.Call(ctx, t, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}}})
		return chromedp.Void{}, err
	}
}
