package runs

import (
	"context"
	"fmt"
	"maps"

	"github.com/errandci/errand/client"
	"github.com/errandci/errand/manager/store"
)

// Trigger kinds the manager records.
const (
	// TriggerUser: a user submitted a config or started a run of a
	// pipeline.
	TriggerUser = "user"
	// TriggerWebhook: a webhook delivery started a run of a pipeline.
	TriggerWebhook = "webhook"
	// TriggerRestart: a user restarted a run.
	TriggerRestart = "restart"
)

// StartParams says how to start a run: the config and what the run is
// given, and where it came from.
type StartParams struct {
	Request *client.RunRequest
	// Pipeline names the stored pipeline the run is a run of (it takes
	// the pipeline's next number), empty for a submitted config.
	Pipeline string
	// Trigger says who or what started the run; its Kind is required.
	Trigger store.RunTrigger
}

// Start plans a config and stores the run as Create does, as a run of
// p.Pipeline (numbered in the transaction that stores it) with its
// trigger. errand.ErrNotFound when the pipeline does not exist.
// The run is made by the trigger's Who.
func (s *Service) Start(ctx context.Context, p StartParams) (*client.Run, error) {
	return s.create(ctx, p.Request, createOptions{createdBy: p.Trigger.Who, origin: &store.RunOrigin{Pipeline: p.Pipeline, Trigger: p.Trigger}})
}

// createOptions are what a run is made with beside its request.
type createOptions struct {
	// createdBy names who makes the run.
	createdBy string
	origin    *store.RunOrigin
	// keep, for a restart from failed, are the stages the new run takes
	// from the run it restarts.
	keep *keptStages
}

// originOf is the origin a run is stored with: the options' trigger and
// links, and the variables the request gives.
func (o createOptions) originOf(req *client.RunRequest) *store.RunOrigin {
	out := &store.RunOrigin{Trigger: store.RunTrigger{Kind: TriggerUser}}
	if o.origin != nil {
		c := *o.origin
		out = &c
	}
	out.Variables, out.ExtStr = maps.Clone(req.Env), maps.Clone(req.ExtStr)
	return out
}

// originView sets what a run's origin shows.
func originView(out *client.Run, o *store.RunOrigin) {
	if o == nil {
		return
	}
	out.Pipeline, out.Number = o.Pipeline, o.Number
	if o.Pipeline != "" {
		out.Name = RunName(o.Pipeline, o.Number)
	}
	t := o.Trigger
	out.Trigger = &client.RunTrigger{Kind: t.Kind, Who: t.Who, Event: t.Event, Commit: t.Commit, Ref: t.Ref, Author: t.Author, Message: t.Message}
	out.Variables = o.Variables
	out.RestartOf, out.RestartFrom = o.RestartOf, o.RestartFrom
	if o.RestartOf != "" {
		out.RestartOfHref = Href(o.RestartOf)
	}
}

// RunName is how a run of a pipeline is named: pipeline#number.
func RunName(pipeline string, number int64) string {
	return fmt.Sprintf("%s#%d", pipeline, number)
}
