package manager

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/errandci/errand/client"
	"github.com/errandci/errand/manager/ost/s3"
	"github.com/errandci/errand/manager/ost/s3/s3test"
	"github.com/errandci/errand/manager/store/sqlite"
)

// benchArtifactSize is the artifact of BenchmarkArtifacts: 1 GiB.
const benchArtifactSize = 1 << 30

// BenchmarkArtifacts uploads, then downloads, one 1 GiB artifact through
// a manager on loopback (HTTP, as a delegate and errand artifacts get
// do) into MinIO, reporting MB/s, B/op and the process's peak RSS
// (VmHWM: client, manager and multipart buffers together). The content
// is made as it is sent and checked as it is read, so nothing holds it.
//
//	go test -run '^$' -bench BenchmarkArtifacts -benchtime 1x ./manager/
func BenchmarkArtifacts(b *testing.B) {
	ctx := context.Background()
	dir := b.TempDir()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "errand.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	objects, err := s3.New(ctx, s3test.Config(b))
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(Config{AdminToken: testAdmin, RegistrationToken: testReg, Log: quietLogger(), ArtifactsMaxSize: 2 << 30}, st, objects)
	if err != nil {
		b.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	defer func() {
		s.shutdownWaiters()
		ts.Close()
		_ = s.Stop(ctx)
		_ = objects.Close()
		// The clients' keep-alive connections, for the leak check.
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	}()
	reg := client.New(ts.URL, testReg)
	r, err := reg.Register(ctx, &client.RegisterRequest{Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	delegateClient := client.New(ts.URL, r.Token)
	admin := client.New(ts.URL, testAdmin)
	want := patternSHA256(benchArtifactSize)

	var taskID, lease string
	upload := func(b *testing.B) {
		created, err := admin.CreateTasks(ctx, []*client.TaskSpec{{Type: "bench.artifacts", Data: json.RawMessage(`{"stage":"s","artifacts":{"paths":["big.bin"]}}`)}})
		if err != nil {
			b.Fatal(err)
		}
		got, err := delegateClient.Acquire(ctx, r.ID, &client.AcquireRequest{Max: 1})
		if err != nil || len(got.Tasks) != 1 {
			b.Fatalf("acquire: %v %v", got, err)
		}
		taskID, lease = created[0].ID, got.Tasks[0].Lease.Token
		pr, pw := io.Pipe()
		go func() {
			tw := tar.NewWriter(pw)
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "big.bin", Size: benchArtifactSize, Mode: 0o644}); err != nil {
				pw.CloseWithError(err)
				return
			}
			if _, err := io.Copy(tw, io.LimitReader(&pattern{}, benchArtifactSize)); err != nil {
				pw.CloseWithError(err)
				return
			}
			pw.CloseWithError(tw.Close())
		}()
		kept, err := delegateClient.UploadArtifacts(ctx, taskID, lease, pr)
		if err != nil {
			b.Fatal(err)
		}
		if len(kept.Items) != 1 || kept.Items[0].SHA256 != want {
			b.Fatalf("kept %+v, want sha256 %s", kept.Items, want)
		}
	}
	b.Run("upload", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(benchArtifactSize)
		for range b.N {
			upload(b)
		}
		reportPeakRSS(b)
	})
	if taskID == "" {
		b.StopTimer()
		upload(b)
	}
	b.Run("download", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(benchArtifactSize)
		for range b.N {
			content, err := admin.GetArtifact(ctx, taskID, "big.bin", 0)
			if err != nil {
				b.Fatal(err)
			}
			h := sha256.New()
			n, err := io.Copy(h, content.Body)
			content.Body.Close()
			if err != nil || n != benchArtifactSize || hex.EncodeToString(h.Sum(nil)) != want {
				b.Fatalf("downloaded %d bytes, %v", n, err)
			}
		}
		reportPeakRSS(b)
	})
}

// pattern is an endless, cheap, non-repeating-looking byte stream.
type pattern struct{ n uint64 }

func (p *pattern) Read(b []byte) (int, error) {
	for i := range b {
		p.n = p.n*6364136223846793005 + 1442695040888963407
		b[i] = byte(p.n >> 56)
	}
	return len(b), nil
}

func patternSHA256(n int64) string {
	h := sha256.New()
	_, _ = io.Copy(h, io.LimitReader(&pattern{}, n))
	return hex.EncodeToString(h.Sum(nil))
}

// reportPeakRSS reports the process's peak resident set (VmHWM).
func reportPeakRSS(b *testing.B) {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			b.ReportMetric(float64(kb)/1024, "peak-RSS-MiB")
		}
	}
}
