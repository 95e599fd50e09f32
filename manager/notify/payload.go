package notify

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/errandci/errand/client"
	"github.com/errandci/errand/pipeline"
)

// Event is what a pipeline is notified of: a run that ended, or a stage
// of it that waits for approval.
type Event struct {
	// Kind is EventRunFinished or EventStageWaiting.
	Kind     string
	Pipeline string
	Run      *client.Run
	// Stage is the stage that waits (EventStageWaiting).
	Stage string
}

// on is the values of a target's On that ask for ev.
func (ev *Event) on() []string {
	switch ev.Kind {
	case EventStageWaiting:
		return []string{OnWaiting}
	case EventRunStarted:
		return []string{OnStarted}
	}
	switch pipeline.Result(ev.Run.Result) {
	case pipeline.ResultSuccess:
		return []string{OnSuccess, OnFinished}
	case pipeline.ResultCancelled:
		return []string{OnCancelled, OnFinished}
	}
	return []string{OnFailure, OnFailed, OnFinished}
}

// notification is the payload of ev as the delivery id tells it.
func notification(ev *Event, id, externalURL string, now time.Time) *client.Notification {
	r := ev.Run
	nr := &client.NotificationRun{ID: r.ID, Href: r.Href, Branch: r.Branch, Event: r.Event, Phase: r.Phase, Result: r.Result,
		CreatedAt: r.CreatedAt, StartedAt: r.StartedAt, FinishedAt: r.FinishedAt, Duration: r.Duration}
	for _, st := range r.Stages {
		nr.Stages = append(nr.Stages, client.NotificationStage{Name: st.Name, State: st.State})
	}
	n := &client.Notification{Kind: client.KindNotification, ID: id, Event: ev.Kind, Pipeline: ev.Pipeline, Stage: ev.Stage, Run: nr,
		CreatedAt: now.UTC()}
	if externalURL != "" {
		n.URL = strings.TrimSuffix(externalURL, "/") + "/ui/runs/" + r.ID
	}
	return n
}

// slackMessage is the body of a Slack incoming webhook.
type slackMessage struct {
	Text string `json:"text"`
}

// slackText is n told in Slack's text format: what happened, to which
// run of which pipeline, on which branch, linked to the run's page when
// the manager knows its address.
func slackText(n *client.Notification) string {
	r := n.Run
	run := "run " + slackEscape(r.ID)
	if n.URL != "" {
		run = "<" + n.URL + "|run " + slackEscape(r.ID) + ">"
	}
	on := ""
	if r.Branch != "" {
		on = " on `" + slackEscape(r.Branch) + "`"
	}
	if r.Event != "" {
		on += " (" + slackEscape(r.Event) + ")"
	}
	pl := "*" + slackEscape(n.Pipeline) + "*"
	switch n.Event {
	case EventStageWaiting:
		return fmt.Sprintf(":double_vertical_bar: Stage *%s* of %s %s%s waits for approval", slackEscape(n.Stage), pl, run, on)
	case EventRunStarted:
		return fmt.Sprintf(":arrow_forward: %s %s%s started", pl, run, on)
	}
	took := ""
	if r.Duration > 0 {
		took = " in " + time.Duration(r.Duration).Round(time.Second).String()
	}
	switch pipeline.Result(r.Result) {
	case pipeline.ResultSuccess:
		return fmt.Sprintf(":white_check_mark: %s %s%s succeeded%s", pl, run, on, took)
	case pipeline.ResultCancelled:
		return fmt.Sprintf(":no_entry_sign: %s %s%s was cancelled%s", pl, run, on, took)
	}
	return fmt.Sprintf(":x: %s %s%s failed%s", pl, run, on, took)
}

// slackEscape escapes the characters Slack's text format gives a meaning
// to.
func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// body encodes what a target is sent about n.
func body(t Target, n *client.Notification) ([]byte, error) {
	if t.Slack != nil {
		return json.Marshal(slackMessage{Text: slackText(n)})
	}
	return json.Marshal(n)
}
