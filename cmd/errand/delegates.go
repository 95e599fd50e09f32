package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/alecthomas/kingpin/v2"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
)

func init() { commands = append(commands, addDelegatesCommand) }

func addDelegatesCommand(app *kingpin.Application, g *globals) {
	cmd := app.Command("delegates", "List and inspect delegates, and drain them.")
	cf := addClientFlags(cmd)

	cmd.Command("list", "List delegates.").Alias("ls").Action(g.action(func(ctx context.Context) error {
		l, err := cf.client().ListDelegates(ctx)
		if err != nil {
			return err
		}
		return cf.print(g.Stdout, l, func() error { return delegateTable(g.Stdout, l.Items) })
	}))

	get := cmd.Command("get", "Show a delegate.")
	getID := get.Arg("id", "Delegate id.").Required().String()
	get.Action(g.action(func(ctx context.Context) error {
		d, err := cf.client().GetDelegate(ctx, *getID)
		if err != nil {
			return err
		}
		return cf.print(g.Stdout, d, func() error { return delegateFields(g.Stdout, d) })
	}))

	drain := cmd.Command("drain", "Ask delegates to finish their tasks and take no more.")
	drainIDs := drain.Arg("id", "Delegate ids.").Required().Strings()
	drain.Action(g.action(func(ctx context.Context) error {
		c := cf.client()
		var done []actionResult
		for _, id := range *drainIDs {
			if err := c.DrainDelegate(ctx, id); err != nil {
				return err
			}
			done = append(done, actionResult{Kind: "delegate", ID: id, Action: "drain_requested"})
			if cf.output != "json" {
				fmt.Fprintf(g.Stdout, "drain requested: %s\n", id)
			}
		}
		if cf.output == "json" {
			return printJSON(g.Stdout, done)
		}
		return nil
	}))
}

func delegateTable(w io.Writer, ds []*client.Delegate) error {
	rows := make([][]string, 0, len(ds))
	for _, d := range ds {
		state := string(d.State)
		if d.DrainRequested && d.State == errand.DelegateActive {
			state += " (drain requested)"
		}
		if d.Overloaded {
			state += " (overloaded)"
		}
		rows = append(rows, []string{d.ID, d.Name, dash(d.Hostname), dash(d.Group), state,
			strconv.Itoa(d.Capacity), localTime(d.LastHeartbeat)})
	}
	return table(w, []string{"ID", "NAME", "HOST", "GROUP", "STATE", "CAPACITY", "LAST HEARTBEAT"}, rows)
}

func delegateFields(w io.Writer, d *client.Delegate) error {
	var labels []string
	for k, v := range d.Labels {
		labels = append(labels, k+"="+v)
	}
	sort.Strings(labels)
	return fields(w, [][2]string{
		{"ID", d.ID},
		{"Name", d.Name},
		{"Hostname", d.Hostname},
		{"Group", d.Group},
		{"State", string(d.State)},
		{"Drain requested", yes(d.DrainRequested)},
		{"Overloaded", yes(d.Overloaded)},
		{"Labels", strings.Join(labels, ",")},
		{"Archs", strings.Join(d.Archs, ",")},
		{"Capacity", strconv.Itoa(d.Capacity)},
		{"Task types", strings.Join(d.TaskTypes, ",")},
		{"Dynamic", yes(d.Dynamic)},
		{"Version", d.Version},
		{"Created", localTime(d.CreatedAt)},
		{"Last heartbeat", localTime(d.LastHeartbeat)},
	})
}
