package manager

import (
	"context"

	"github.com/sirupsen/logrus"

	"github.com/errandci/errand/client"
	"github.com/errandci/errand/manager/hooks"
	"github.com/errandci/errand/manager/notify"
	"github.com/errandci/errand/manager/pipelines"
	"github.com/errandci/errand/manager/runs"
	"github.com/errandci/errand/manager/scheduler"
	"github.com/errandci/errand/manager/store"
)

// storedPipelines is the stored pipelines as the webhooks see them: their
// webhook triggers, their notify lists, and the runs hooks start.
type storedPipelines struct {
	store   store.Store
	pipes   *pipelines.Service
	secrets scheduler.SecretSource
	log     *logrus.Logger
}

var _ pipelineHooks = storedPipelines{}

func (p storedPipelines) spec(ctx context.Context, name string) (*client.PipelineSpec, error) {
	stored, err := p.store.PipelineGet(ctx, name)
	if err != nil {
		return nil, err
	}
	return pipelines.Spec(stored)
}

// PipelineExists implements hooks.Pipelines.
func (p storedPipelines) PipelineExists(ctx context.Context, name string) error {
	_, err := p.store.PipelineGet(ctx, name)
	return err
}

// WebhookTrigger implements hooks.Pipelines: a secret the trigger names
// that the manager does not hold verifies nothing.
func (p storedPipelines) WebhookTrigger(ctx context.Context, name string) (bool, []string, error) {
	sp, err := p.spec(ctx, name)
	if err != nil {
		return false, nil, err
	}
	if sp.Triggers == nil || sp.Triggers.Webhook == nil {
		return false, nil, nil
	}
	var values []string
	for _, n := range sp.Triggers.Webhook.Secrets {
		v, ok, err := p.secrets.Secret(ctx, n)
		if err != nil || !ok {
			p.log.WithFields(logrus.Fields{"pipeline": name, "secret": n}).Warn("hooks: a secret of the pipeline's webhook trigger is not set on the manager")
			continue
		}
		values = append(values, v)
	}
	return true, values, nil
}

// StartRun implements hooks.Pipelines.
func (p storedPipelines) StartRun(ctx context.Context, name, deliveryID string, t *hooks.Trigger) (string, error) {
	who := t.Sender
	if who == "" {
		who = runs.TriggerWebhook
	}
	run, err := p.pipes.StartRun(ctx, name, pipelines.TriggerParams{Kind: runs.TriggerWebhook, Who: who, Event: t.Event,
		Ref: t.Ref, Branch: t.Branch, Commit: t.Commit, Author: t.Author, Message: t.Message, Variables: t.Variables})
	if err != nil {
		return "", err
	}
	p.log.WithFields(logrus.Fields{"pipeline": name, "delivery_id": deliveryID, "run_id": run.ID}).Debug("hooks: run started")
	return run.ID, nil
}

// NotifyTargets returns a pipeline's notify list.
func (p storedPipelines) NotifyTargets(ctx context.Context, name string) ([]notify.Target, error) {
	sp, err := p.spec(ctx, name)
	if err != nil {
		return nil, err
	}
	out := make([]notify.Target, 0, len(sp.Notify))
	for _, n := range sp.Notify {
		switch {
		case n.Webhook != nil:
			out = append(out, notify.Target{Webhook: &notify.Webhook{URL: n.Webhook.URL, SecretName: n.Webhook.Secret, On: n.Webhook.On}})
		case n.Slack != nil:
			out = append(out, notify.Target{Slack: &notify.Slack{URLSecret: n.Slack.URLSecret, On: n.Slack.On}})
		}
	}
	return out, nil
}
