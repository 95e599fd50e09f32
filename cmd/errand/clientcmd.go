package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
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
	timeout time.Duration
	retry   time.Duration
	output  string
}

// addClientFlags adds the connection flags (--manager, --token,
// --data-dir, --timeout, --retry) and --output to cmd; its subcommands
// share them.
func addClientFlags(cmd *kingpin.CmdClause) *clientFlags {
	f := addConnectionFlags(cmd)
	addOutputFlag(cmd, &f.output)
	return f
}

// addConnectionFlags adds the connection flags alone, for a command whose
// -o means something else.
func addConnectionFlags(cmd *kingpin.CmdClause) *clientFlags {
	f := &clientFlags{}
	cmd.Flag("manager", "URL of the manager (http:// or https://).").Envar("ERRAND_MANAGER").
		Default("http://127.0.0.1:7700").SetValue(&managerURL{&f.manager})
	cmd.Flag("token", "API token: a user token, or the admin token (default: the admin.token file in --data-dir).").Envar("ERRAND_TOKEN").
		StringVar(&f.token)
	cmd.Flag("data-dir", "The manager's data directory, where its generated admin token is found when --token is not given.").
		Envar("ERRAND_DATA_DIR").Default("./errand-data").StringVar(&f.dataDir)
	cmd.Flag("timeout", "Time one request to the manager may take (following a log or a run is not bounded).").
		Envar("ERRAND_TIMEOUT").Default(client.DefaultTimeout.String()).SetValue(&positiveDuration{&f.timeout})
	cmd.Flag("retry", "How long to retry a request while the manager cannot be reached (0: no retries).").
		Envar("ERRAND_RETRY").Default("5s").DurationVar(&f.retry)
	return f
}

// addOutputFlag adds --output (-o) to cmd.
func addOutputFlag(cmd *kingpin.CmdClause, target *string) {
	cmd.Flag("output", "Output format: table or json.").Short('o').Envar("ERRAND_OUTPUT").
		Default("table").EnumVar(target, "table", "json")
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
	retry := max(f.retry, 0)
	timeout := f.timeout
	if timeout <= 0 {
		timeout = client.DefaultTimeout
	}
	return client.New(f.manager, token, client.WithLogger(logrus.NewEntry(log)),
		client.WithRetry(retry), client.WithTimeout(timeout))
}

// print writes v as indented JSON when -o json was given, else calls text
// (a table or fields).
func (f *clientFlags) print(w io.Writer, v any, text func() error) error {
	if f.output == "json" {
		return printJSON(w, v)
	}
	return text()
}

// managerURL is the value of --manager: an http:// or https:// URL with a
// host, checked when the command line (or ERRAND_MANAGER) is parsed so
// that a bad one is a usage error before anything starts.
type managerURL struct{ s *string }

func (u *managerURL) Set(v string) error {
	if err := checkManagerURL(v); err != nil {
		return err
	}
	*u.s = v
	return nil
}

func (u *managerURL) String() string { return *u.s }

// checkManagerURL says what is wrong with a manager URL.
func checkManagerURL(v string) error {
	p, err := url.Parse(v)
	switch {
	case err != nil || p.Scheme != "http" && p.Scheme != "https":
		return fmt.Errorf("%q is not an http:// or https:// URL such as http://127.0.0.1:7700", v)
	case p.Host == "":
		return fmt.Errorf("%q has no host", v)
	}
	return nil
}

// positiveDuration is a duration flag that must be more than zero.
type positiveDuration struct{ d *time.Duration }

func (p *positiveDuration) Set(v string) error {
	d, err := time.ParseDuration(v)
	if err != nil {
		return fmt.Errorf("%q is not a duration such as 30s or 2m", v)
	}
	if d <= 0 {
		return fmt.Errorf("%s: must be more than 0", v)
	}
	*p.d = d
	return nil
}

func (p *positiveDuration) String() string { return p.d.String() }

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

// localTime renders a time for a table or fields: empty when zero, else
// local time with its zone (tableTimeLayout). JSON output keeps the
// API's RFC 3339 times in UTC.
func localTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Local().Format(tableTimeLayout)
}

// localTimePtr is localTime of an optional time.
func localTimePtr(t *time.Time) string {
	if t == nil {
		return ""
	}
	return localTime(*t)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
