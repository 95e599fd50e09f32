package manager

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/manager/ost/posix"
	"github.com/errandci/errand/manager/store/sqlite"
)

// tinyDisk mounts a tmpfs of size bytes that the test removes.
func tinyDisk(t *testing.T, size int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "disk")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a tmpfs for the full disk (needs root): %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

func TestFullDiskSaysStorageFullAndNotReady(t *testing.T) {
	disk := tinyDisk(t, 2<<20)
	// Room to give back once the disk is full.
	filler := filepath.Join(disk, "filler")
	if err := os.WriteFile(filler, make([]byte, 512<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(context.Background(), filepath.Join(disk, "errand.db"))
	if err != nil {
		t.Fatal(err)
	}
	objects, err := posix.New(filepath.Join(t.TempDir(), "objects"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{AdminToken: testAdmin, RegistrationToken: testReg, Log: quietLogger()}, st, objects)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	e := &env{t: t, s: s, ts: ts, objects: objects, http: ts.Client()}
	t.Cleanup(func() {
		s.shutdownWaiters()
		ts.Close()
		_ = s.Stop(context.Background())
		_ = st.Close()
		_ = objects.Close()
	})
	e.must(http.StatusOK, "GET", "/readyz", "", nil, nil)

	pad := fmt.Sprintf(`{"pad":%q}`, strings.Repeat("x", 8000))
	var code int
	var body []byte
	for i := 0; ; i++ {
		if i > 2000 {
			t.Fatal("2000 tasks of 8 kB fit on a 2 MiB disk")
		}
		code, body = e.do("POST", "/api/v1/tasks", testAdmin, &client.TaskSpec{Type: "x", Data: []byte(pad)})
		if code != http.StatusCreated {
			break
		}
	}
	if code != http.StatusInsufficientStorage || !strings.Contains(string(body), `"code":"`+errand.CodeStorageFull+`"`) {
		t.Fatalf("create on a full disk = %d %s, want 507 storage_full", code, body)
	}
	e.fails(http.StatusServiceUnavailable, errand.CodeUnavailable, "GET", "/readyz", "", nil)

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := e.do("GET", "/readyz", "", nil)
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("readyz with room again = %d %s, want 200", code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.create(&client.TaskSpec{Type: "x"})
}
