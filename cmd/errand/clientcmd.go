package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/sirupsen/logrus"

	"github.com/errandci/errand/client"
	"github.com/errandci/errand/manager"
)

// clientFlags are the flags of a command that talks to a manager.
type clientFlags struct {
	manager string
	token   string
	dataDir string
	output  string
}

// addClientFlags adds --manager, --token, --data-dir and --output to cmd;
// its subcommands share them.
func addClientFlags(cmd *kingpin.CmdClause) *clientFlags {
	f := &clientFlags{}
	cmd.Flag("manager", "URL of the manager.").Envar("ERRAND_MANAGER").
		Default("http://127.0.0.1:7700").StringVar(&f.manager)
	cmd.Flag("token", "Admin token (default: the admin.token file in --data-dir).").Envar("ERRAND_TOKEN").
		StringVar(&f.token)
	cmd.Flag("data-dir", "The manager's data directory, where its generated admin token is found.").
		Envar("ERRAND_DATA_DIR").Default("./errand-data").StringVar(&f.dataDir)
	cmd.Flag("output", "Output format: table or json.").Short('o').Envar("ERRAND_OUTPUT").
		Default("table").EnumVar(&f.output, "table", "json")
	return f
}

// client returns a client of the manager with the flags' token, or the
// admin token stored in the data dir when no token was given.
func (f *clientFlags) client() *client.HTTP {
	token := f.token
	if token == "" {
		admin, _ := manager.TokenPaths(f.dataDir)
		if b, err := os.ReadFile(admin); err == nil {
			token = strings.TrimSpace(string(b))
		}
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	return client.New(f.manager, token, client.WithLogger(logrus.NewEntry(log)), client.WithRetry(5*time.Second))
}

// printJSON writes v as indented JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write JSON: %w", err)
	}
	return nil
}

// table writes rows under a header, in aligned columns.
func table(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	return nil
}

// fields writes name: value lines, aligned.
func fields(w io.Writer, kv [][2]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	for _, p := range kv {
		if p[1] == "" {
			continue
		}
		fmt.Fprintf(tw, "%s:\t%s\n", p[0], p[1])
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write fields: %w", err)
	}
	return nil
}

// stamp renders a time for a table: empty when zero, else RFC 3339 in UTC.
func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func stampPtr(t *time.Time) string {
	if t == nil {
		return ""
	}
	return stamp(*t)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
