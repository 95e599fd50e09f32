package main

import (
	"strconv"

	"github.com/alecthomas/kingpin/v2"

	"github.com/errandci/errand/manager"
)

// addWebhookFlags adds the flags of webhooks and notifications to the
// manager command.
func addWebhookFlags(cmd *kingpin.CmdClause, c *manager.WebhookConfig) {
	cmd.Flag("max-hook-body", "Largest webhook delivery body in bytes; a larger one is refused with 413.").Envar("ERRAND_MAX_HOOK_BODY").
		Default(strconv.Itoa(manager.DefaultMaxHookBody)).Int64Var(&c.MaxBody)
	cmd.Flag("hook-replay-window", "How long a webhook delivery id, or a body, once accepted is refused as a replay.").Envar("ERRAND_HOOK_REPLAY_WINDOW").
		Default("24h").DurationVar(&c.ReplayWindow)
	cmd.Flag("keep-deliveries", "Webhook deliveries kept per pipeline: that many signed hooks, that many notifications, half as many unsigned refusals.").
		Envar("ERRAND_KEEP_DELIVERIES").Default(strconv.Itoa(manager.DefaultKeepDeliveries)).IntVar(&c.KeepDeliveries)
	cmd.Flag("notify-allow-private", "Let notifications go to loopback, private and link-local addresses (default: public addresses only).").
		Envar("ERRAND_NOTIFY_ALLOW_PRIVATE").BoolVar(&c.NotifyAllowPrivate)
	cmd.Flag("notify-timeout", "Time one attempt to send a notification may take.").Envar("ERRAND_NOTIFY_TIMEOUT").
		Default("10s").DurationVar(&c.NotifyTimeout)
	cmd.Flag("notify-attempts", "Attempts to send a notification before it is failed.").Envar("ERRAND_NOTIFY_ATTEMPTS").
		Default("6").IntVar(&c.NotifyAttempts)
	cmd.Flag("notify-retry-interval", "Wait before the first retry of a notification; it doubles with each retry, up to 5 minutes.").
		Envar("ERRAND_NOTIFY_RETRY_INTERVAL").Default("2s").DurationVar(&c.NotifyRetryInterval)
	cmd.Flag("external-url", "The manager's address as users reach it (https://ci.example.com), for links in notifications.").
		Envar("ERRAND_EXTERNAL_URL").StringVar(&c.ExternalURL)
}
