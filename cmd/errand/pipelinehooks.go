package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/errandci/errand/client"
)

// addPipelineHookCommands adds the webhook commands of a pipeline to the
// pipelines command: its deliveries, redelivering one, and rotating its
// hook secret.
func addPipelineHookCommands(cmd *kingpin.CmdClause, g *globals, cf *clientFlags) {
	list := cmd.Command("deliveries", "List a pipeline's webhook deliveries, newest first: hooks received (accepted with their run, or refused with why) and notifications sent.")
	listName := list.Arg("name", "Pipeline name.").Required().String()
	var before string
	var limit int
	list.Flag("before", "Deliveries older than this id (paging: the id of the last one shown).").Envar("ERRAND_DELIVERIES_BEFORE").StringVar(&before)
	list.Flag("limit", "At most this many deliveries.").Envar("ERRAND_LIMIT").Default("50").IntVar(&limit)
	list.Action(g.action(func(ctx context.Context) error {
		l, err := cf.client().ListDeliveries(ctx, *listName, before, limit)
		if err != nil {
			return err
		}
		if cf.output == "json" {
			for _, d := range l.Deliveries {
				utcDelivery(d)
			}
			return printJSON(g.Stdout, l)
		}
		rows := make([][]string, len(l.Deliveries))
		for i, d := range l.Deliveries {
			status := "-"
			if d.StatusCode != 0 {
				status = strconv.Itoa(d.StatusCode)
			}
			rows[i] = []string{d.ID, localStamp(&d.CreatedAt), d.Direction, d.Source, dash(d.Event), d.State, status, dash(d.RunID), dash(d.Reason)}
		}
		return table(g.Stdout, []string{"ID", "AT", "DIRECTION", "SOURCE", "EVENT", "STATE", "STATUS", "RUN", "REASON"}, rows)
	}))

	re := cmd.Command("redeliver", "Send a delivery again, as a new delivery: a hook starts its run anew (no replay check), a notification is sent to its receiver again.")
	reName := re.Arg("name", "Pipeline name.").Required().String()
	reID := re.Arg("id", "Delivery id (errand pipelines deliveries NAME).").Required().String()
	re.Action(g.action(func(ctx context.Context) error {
		d, err := cf.client().Redeliver(ctx, *reName, *reID)
		if err != nil {
			return err
		}
		return cf.print(g.Stdout, utcDelivery(d), func() error {
			return fields(g.Stdout, [][2]string{{"Delivery", d.ID}, {"Redelivery of", d.RedeliveryOf}, {"State", d.State},
				{"Run", d.RunID}, {"Reason", d.Reason}})
		})
	}))

	rot := cmd.Command("rotate-secret", "Make a new hook secret for a pipeline and print it, once. The previous one still verifies deliveries for --previous-valid-for, so that senders can switch without a refused delivery.")
	rotName := rot.Arg("name", "Pipeline name.").Required().String()
	var prev time.Duration
	var endPrev bool
	rot.Flag("previous-valid-for", "How long the replaced secret still verifies deliveries (0s: not at all).").Envar("ERRAND_PREVIOUS_VALID_FOR").
		Default("24h").DurationVar(&prev)
	rot.Flag("end-previous", "Do not rotate: stop the previous secret from verifying, at once.").Envar("ERRAND_END_PREVIOUS").BoolVar(&endPrev)
	rot.Action(g.action(func(ctx context.Context) error {
		c := cf.client()
		var h *client.HookSecret
		var err error
		if endPrev {
			h, err = c.EndPreviousHookSecret(ctx, *rotName)
		} else {
			if prev < 0 {
				return fmt.Errorf("--previous-valid-for: %s is negative", prev)
			}
			h, err = c.RotateHookSecret(ctx, *rotName, &client.HookSecretRequest{PreviousValidFor: prev.String()})
		}
		if err != nil {
			return err
		}
		return cf.print(g.Stdout, utcHookSecret(h), func() error {
			if h.Secret != "" {
				fmt.Fprintf(g.Stderr, "The secret is shown this once; set it as the webhook's secret of the sender.\n")
			}
			previous := "none"
			if h.Previous {
				previous = "valid until " + localTimePtr(h.PreviousUntil)
			}
			return fields(g.Stdout, [][2]string{{"Pipeline", h.Pipeline}, {"Hook URL", cf.manager + h.HookURL}, {"Secret", h.Secret},
				{"Previous", previous}})
		})
	}))
}

func utcDelivery(d *client.Delivery) *client.Delivery {
	d.CreatedAt, d.UpdatedAt = d.CreatedAt.UTC(), d.UpdatedAt.UTC()
	return d
}

func utcHookSecret(h *client.HookSecret) *client.HookSecret {
	h.RotatedAt = h.RotatedAt.UTC()
	if h.PreviousUntil != nil {
		t := h.PreviousUntil.UTC()
		h.PreviousUntil = &t
	}
	return h
}
