package main

import (
	"context"
	"encoding/json"
	"os/user"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/errandci/errand/client"
	"github.com/errandci/errand/internal/testenv"
	"github.com/errandci/errand/manager/store"
	"github.com/errandci/errand/manager/store/sqlite"
)

// TestE2ERunCreatedBy: errand runs list and get say who made a run: a
// user submitting with their token, admin with the bootstrap admin
// token; errand run records the OS user.
func TestE2ERunCreatedBy(t *testing.T) {
	m := testenv.StartManager(t, testenv.Binary(t), "--log-format", "json")
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"config.yml": "stages: [{name: a, steps: [{name: s, commands: [\"true\"]}]}]\n"})
	cli := func(token string, args ...string) string {
		t.Helper()
		code, out, _ := runIn(t, dir, []string{"ERRAND_MANAGER=" + m.URL, "ERRAND_TOKEN=" + token}, args...)
		mustSucceed(t, code, out)
		return out
	}
	cli(m.AdminToken, "users", "create", "olga", "--role", "operator")
	var tk client.Token
	if err := json.Unmarshal([]byte(cli(m.AdminToken, "tokens", "create", "cli", "--user", "olga", "-o", "json")), &tk); err != nil {
		t.Fatal(err)
	}
	runID := regexp.MustCompile(`(?m)^run (\S+) `)
	olgas := runID.FindStringSubmatch(cli(tk.Secret, "submit", "config.yml"))
	admins := runID.FindStringSubmatch(cli(m.AdminToken, "submit", "config.yml"))
	if olgas == nil || admins == nil {
		t.Fatal("errand submit printed no run id")
	}
	list := cli(tk.Secret, "runs", "list")
	if !regexp.MustCompile(`(?m)^ID +PHASE +RESULT +STAGES +BRANCH +CREATED BY +CREATED `).MatchString(list) ||
		!regexp.MustCompile(`(?m)^`+olgas[1]+` .* olga +\d{4}-`).MatchString(list) ||
		!regexp.MustCompile(`(?m)^`+admins[1]+` .* admin +\d{4}-`).MatchString(list) {
		t.Errorf("errand runs list does not show who made each run:\n%s", list)
	}
	if get := cli(m.AdminToken, "runs", "get", olgas[1]); !regexp.MustCompile(`(?m)^created by: +olga$`).MatchString(get) {
		t.Errorf("errand runs get does not say olga made the run:\n%s", get)
	}

	code, out, _ := runIn(t, dir, nil, "run", "--data-dir", "data")
	mustSucceed(t, code, out)
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "data", "errand.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	runs, err := st.RunList(context.Background(), store.RunListParams{})
	if err != nil || len(runs) != 1 {
		t.Fatalf("the local run's store holds %d runs (%v), want 1", len(runs), err)
	}
	want := "local"
	if u, err := user.Current(); err == nil && u.Username != "" {
		want = u.Username
	}
	if runs[0].CreatedBy != want || strings.TrimSpace(want) == "" {
		t.Errorf("errand run recorded created_by %q, want %q", runs[0].CreatedBy, want)
	}
}
