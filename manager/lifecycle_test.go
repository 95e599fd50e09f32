package manager

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
)

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s, err := Open(ctx, Config{DataDir: dir, Log: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	adminPath, regPath := TokenPaths(dir)
	for path, want := range map[string]string{adminPath: s.AdminToken(), regPath: s.RegistrationToken()} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", path, st.Mode().Perm())
		}
		b, _ := os.ReadFile(path)
		if strings.TrimSpace(string(b)) != want || len(want) < 32 {
			t.Errorf("%s does not hold the server's token", path)
		}
	}
	if s.AdminToken() == s.RegistrationToken() {
		t.Error("admin and registration tokens are equal")
	}
	admin := s.AdminToken()
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	// A restart keeps the tokens, so registered delegates stay valid.
	s, err = Open(ctx, Config{DataDir: dir, Log: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if s.AdminToken() != admin {
		t.Error("a restart generated a new admin token")
	}
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{DataDir: dir, Store: "postgres://127.0.0.1:1/errand?connect_timeout=2"}, "open postgres store"},
		{Config{DataDir: dir, Objects: "s3://bucket/base"}, "endpoint is required"},
		{Config{DataDir: dir, Store: "mysql"}, "unknown store"},
		{Config{}, "data dir"},
		{Config{DataDir: dir, AdminToken: "short"}, "at least"},
		{Config{DataDir: dir, HeartbeatInterval: time.Minute, LeaseTTL: time.Second}, "lease TTL"},
	} {
		c.cfg.Log = quietLogger()
		if s, err := Open(ctx, c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			if s != nil {
				_ = s.Stop(ctx)
			}
			t.Errorf("Open(%+v) error = %v, want one mentioning %q", c.cfg, err, c.want)
		}
	}
}

// TestListenAndServe serves on a free port, holds a long-poll open, and
// checks that ending the context ends the poll and the server promptly.
func TestListenAndServe(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(context.Background(), Config{DataDir: dir, Listen: "127.0.0.1:0", Log: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.ListenAndServe(ctx) }()
	var base string
	for range 500 {
		if a := s.Addr(); a != nil {
			base = "http://" + a.String()
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if base == "" {
		cancel()
		t.Fatal("server never bound an address")
	}
	post := func(path, token string, body any) (*http.Response, error) {
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest("POST", base+path, strings.NewReader(string(b)))
		req.Header.Set("Authorization", "Bearer "+token)
		return http.DefaultClient.Do(req)
	}
	resp, err := post("/api/v1/delegates", s.RegistrationToken(), &client.RegisterRequest{Name: "d"})
	if err != nil {
		t.Fatal(err)
	}
	var reg client.Registration
	_ = json.NewDecoder(resp.Body).Decode(&reg)
	resp.Body.Close()

	polled := make(chan error, 1)
	go func() {
		resp, err := post(fmt.Sprintf("/api/v1/delegates/%s/acquire?wait=60s&max=1", reg.ID), reg.Token, nil)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				err = fmt.Errorf("acquire = %d", resp.StatusCode)
			}
		}
		polled <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := s.sched.Waiting()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("long-poll never started")
		}
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	cancel()
	select {
	case err := <-polled:
		if err != nil {
			t.Errorf("long-poll during shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("shutdown did not end the long-poll")
	}
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("ListenAndServe = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ListenAndServe did not return")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("shutdown took %v", d)
	}
}

// TestBackgroundLoops runs Start: a task that ends wakes the sealer (the
// tick is an hour away), and heartbeats reach the store through the
// flusher.
func TestBackgroundLoops(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.SealInterval = time.Hour
		c.HeartbeatFlushInterval = 10 * time.Millisecond
	})
	ctx := context.Background()
	if err := e.s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.s.Start(ctx); err == nil {
		t.Error("second Start succeeded")
	}
	d := e.register("d", nil)
	before, err := e.s.store.DelegateGet(ctx, d.id)
	if err != nil {
		t.Fatal(err)
	}
	task := e.create(&client.TaskSpec{Type: "noop"})
	lease := e.acquire(d, "max=1").Tasks[0].Lease.Token
	e.must(200, "POST", "/api/v1/tasks/"+task.ID+"/logs", d.token, &client.LogAppend{Lease: lease, Lines: []string{"a", "b"}}, nil)
	e.must(200, "POST", "/api/v1/tasks/"+task.ID+"/status", d.token, &client.StatusUpdate{Lease: lease, State: errand.StateSucceeded}, nil)
	deadline := time.Now().Add(5 * time.Second)
	for {
		objs, sealed, err := e.s.store.LogObjects(ctx, task.ID)
		if err != nil {
			t.Fatal(err)
		}
		if sealed {
			if len(objs) != 1 || objs[0].Lines != 2 {
				t.Fatalf("sealed into %+v", objs)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the log was not sealed after the task ended")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for {
		after, err := e.s.store.DelegateGet(ctx, d.id)
		if err != nil {
			t.Fatal(err)
		}
		if after.LastHeartbeat.After(before.LastHeartbeat) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the acquire's heartbeat never reached the store")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
