package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/internal/testenv"
)

// A secret's value reaches the step that names it and is written to no
// file of the manager's data dir: not the SQLite database, not its WAL or
// shared memory, not the sealed log objects. The store holds the secret's
// name; the value comes from the manager's environment when the task is
// leased.
func TestE2ESecretValueNeverInDataDir(t *testing.T) {
	const value = "s3cr3t-v4lue-that-must-not-be-stored"
	t.Setenv("ERRAND_SECRET_DEPLOY_KEY", value)
	m := fastManager(t)
	d := startDelegate(t, m, "runner", t.TempDir())
	defer d.signal(syscall.SIGTERM)
	c := testenv.Client(t, m.URL, m.AdminToken)

	// The step proves it got the value by its digest, which is no
	// secret: the config itself must not hold the value.
	config := "stages:\n  - name: deploy\n    secrets: [DEPLOY_KEY]\n    steps:\n      - name: ship\n" +
		"        commands: ['echo \"key=$DEPLOY_KEY\"', 'printf %s \"$DEPLOY_KEY\" | sha256sum']\n"
	created, err := c.CreateRun(context.Background(), &client.RunRequest{Config: config, Filename: "config.yml"})
	if err != nil {
		t.Fatal(err)
	}
	run := waitRun(t, c, created.ID, func(r *client.Run) bool { return r.Phase == "finished" })
	if run.Result != "success" {
		t.Fatalf("run %s/%s: %+v", run.Phase, run.Result, run.Stages[0].Steps[0])
	}
	step := run.Stages[0].Steps[0].TaskID
	digest := sha256.Sum256([]byte(value))
	if log := taskLog(t, c, step); log != "key=******\n"+hex.EncodeToString(digest[:])+"  -\n" {
		t.Fatalf("step log %q", log)
	}
	// Wait for the run's logs to be sealed into object storage, so that
	// the objects are read too.
	poll(t, "logs sealed", 30*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(m.DataDir, "objects", "logs", step, "0"))
		return err == nil
	})
	assertNotInFiles(t, m.DataDir, value, "errand.db-wal")
	task, err := c.GetTask(context.Background(), step)
	if err != nil {
		t.Fatal(err)
	}
	if names, err := errand.SecretNames(task.Data); err != nil || len(names) != 1 || names[0] != "DEPLOY_KEY" {
		t.Errorf("stored task data %s names secrets %v (%v)", task.Data, names, err)
	}
	if err := m.Stop(); err != nil {
		t.Fatalf("stop manager: %v", err)
	}
	// Stopped, the manager has checkpointed its WAL into the database.
	assertNotInFiles(t, m.DataDir, value, "errand.db")
}

// assertNotInFiles fails if any file under dir holds value; mustSee
// names a file that must be among those read.
func assertNotInFiles(t *testing.T, dir, value, mustSee string) {
	t.Helper()
	seen := map[string]bool{}
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		seen[rel] = true
		if bytes.Contains(b, []byte(value)) {
			t.Errorf("the secret's value is in %s", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !seen[mustSee] {
		var names []string
		for n := range seen {
			names = append(names, n)
		}
		t.Fatalf("%s not among the files read: %s", mustSee, strings.Join(names, ", "))
	}
}
