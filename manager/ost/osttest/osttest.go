// Package osttest is the conformance suite of ost.Storage: the behaviour
// every object storage backend must show, written once and run against
// each backend by its own tests.
package osttest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/errandci/errand/manager/ost"
)

// Run runs the suite. open returns a new, empty storage for each subtest.
func Run(t *testing.T, open func(t *testing.T) ost.Storage) {
	t.Helper()
	t.Run("PutGet", func(t *testing.T) { testPutGet(t, open(t)) })
	t.Run("Replace", func(t *testing.T) { testReplace(t, open(t)) })
	t.Run("Stat", func(t *testing.T) { testStat(t, open(t)) })
	t.Run("Missing", func(t *testing.T) { testMissing(t, open(t)) })
	t.Run("Delete", func(t *testing.T) { testDelete(t, open(t)) })
	t.Run("ListOrder", func(t *testing.T) { testListOrder(t, open(t)) })
	t.Run("InvalidKeys", func(t *testing.T) { testInvalidKeys(t, open(t)) })
	t.Run("LargeUnknownSize", func(t *testing.T) { testLarge(t, open(t)) })
	t.Run("ShortBody", func(t *testing.T) { testShortBody(t, open(t)) })
	t.Run("StreamUnknownSize", func(t *testing.T) { testStreamUnknownSize(t, open(t)) })
	t.Run("GetRange", func(t *testing.T) { testGetRange(t, open(t)) })
	t.Run("AtomicVisibility", func(t *testing.T) { testAtomicVisibility(t, open(t)) })
	t.Run("FailedPutLeavesNothing", func(t *testing.T) { testFailedPut(t, open(t)) })
}

func put(t *testing.T, s ost.Storage, key string, data []byte) {
	t.Helper()
	if err := s.Put(context.Background(), key, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
}

func get(t *testing.T, s ost.Storage, key string) []byte {
	t.Helper()
	rc, err := s.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %q: %v", key, err)
	}
	return b
}

func testPutGet(t *testing.T, s ost.Storage) {
	cases := map[string][]byte{
		"a":                  []byte("first"),
		"logs/01H/0":         []byte("line one\nline two\n"),
		"logs/01H/1":         {},
		"deep/er/and/deeper": bytes.Repeat([]byte{0, 1, 2, 255}, 1000),
	}
	for k, v := range cases {
		put(t, s, k, v)
	}
	for k, v := range cases {
		if got := get(t, s, k); !bytes.Equal(got, v) {
			t.Errorf("Get(%q) = %d bytes, want %d bytes equal to what was put", k, len(got), len(v))
		}
	}
}

func testReplace(t *testing.T, s ost.Storage) {
	put(t, s, "k", []byte("old and longer"))
	put(t, s, "k", []byte("new"))
	if got := string(get(t, s, "k")); got != "new" {
		t.Fatalf("after replace Get = %q, want %q", got, "new")
	}
	list, err := s.List(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 {
		t.Fatalf("List after replace = %v, want one object", list)
	}
}

func testStat(t *testing.T, s ost.Storage) {
	put(t, s, "x/y", []byte("12345"))
	info, err := s.Stat(context.Background(), "x/y")
	if err != nil {
		t.Fatal(err)
	}
	if info.Key != "x/y" || info.Size != 5 || info.LastModified.IsZero() {
		t.Fatalf("Stat = %+v, want key x/y, size 5 and a modification time", info)
	}
}

func testMissing(t *testing.T, s ost.Storage) {
	ctx := context.Background()
	put(t, s, "dir/obj", []byte("x"))
	for _, k := range []string{"nothing", "dir/other", "dir/obj/below", "dir"} {
		if _, err := s.Get(ctx, k); !errors.Is(err, ost.ErrNotFound) {
			t.Errorf("Get(%q) error = %v, want ErrNotFound", k, err)
		}
		if _, err := s.Stat(ctx, k); !errors.Is(err, ost.ErrNotFound) {
			t.Errorf("Stat(%q) error = %v, want ErrNotFound", k, err)
		}
	}
	if err := s.Delete(ctx, "nothing"); err != nil {
		t.Errorf("Delete of a missing object: %v", err)
	}
	list, err := s.List(ctx, "nope/")
	if err != nil || len(list) != 0 {
		t.Errorf("List of an absent prefix = %v, %v; want nothing, no error", list, err)
	}
}

func testDelete(t *testing.T, s ost.Storage) {
	ctx := context.Background()
	put(t, s, "d/1", []byte("1"))
	put(t, s, "d/2", []byte("2"))
	if err := s.Delete(ctx, "d/1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "d/1"); !errors.Is(err, ost.ErrNotFound) {
		t.Fatalf("Get after Delete error = %v, want ErrNotFound", err)
	}
	if got := string(get(t, s, "d/2")); got != "2" {
		t.Fatalf("sibling after Delete = %q", got)
	}
	if err := s.Delete(ctx, "d/1"); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
}

func testListOrder(t *testing.T, s ost.Storage) {
	ctx := context.Background()
	keys := []string{"logs/b/10", "logs/a-b", "logs/b/2", "logs/a/1", "logs/a/0", "other/z", "logsx"}
	for _, k := range keys {
		put(t, s, k, []byte(k))
	}
	cases := []struct {
		prefix string
		want   []string
	}{
		{"", []string{"logs/a-b", "logs/a/0", "logs/a/1", "logs/b/10", "logs/b/2", "logsx", "other/z"}},
		{"logs/", []string{"logs/a-b", "logs/a/0", "logs/a/1", "logs/b/10", "logs/b/2"}},
		{"logs/a", []string{"logs/a-b", "logs/a/0", "logs/a/1"}},
		{"logs/a/", []string{"logs/a/0", "logs/a/1"}},
		{"logs/b/1", []string{"logs/b/10"}},
		{"logs", []string{"logs/a-b", "logs/a/0", "logs/a/1", "logs/b/10", "logs/b/2", "logsx"}},
	}
	for _, c := range cases {
		list, err := s.List(ctx, c.prefix)
		if err != nil {
			t.Fatalf("List(%q): %v", c.prefix, err)
		}
		var got []string
		for _, o := range list {
			got = append(got, o.Key)
			if o.Size != int64(len(o.Key)) {
				t.Errorf("List(%q): %s has size %d, want %d", c.prefix, o.Key, o.Size, len(o.Key))
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("List(%q) = %v, want %v", c.prefix, got, c.want)
		}
	}
}

func testInvalidKeys(t *testing.T, s ost.Storage) {
	ctx := context.Background()
	for _, k := range []string{"", "../x", "a/../../x", "/abs", "a//b", "a/./b", ".", "..", "a/", "a\\b", "x\x00y"} {
		if err := s.Put(ctx, k, bytes.NewReader([]byte("x")), 1); !errors.Is(err, ost.ErrInvalidKey) {
			t.Errorf("Put(%q) error = %v, want ErrInvalidKey", k, err)
		}
		if _, err := s.Get(ctx, k); !errors.Is(err, ost.ErrInvalidKey) {
			t.Errorf("Get(%q) error = %v, want ErrInvalidKey", k, err)
		}
		if _, err := s.Stat(ctx, k); !errors.Is(err, ost.ErrInvalidKey) {
			t.Errorf("Stat(%q) error = %v, want ErrInvalidKey", k, err)
		}
		if err := s.Delete(ctx, k); !errors.Is(err, ost.ErrInvalidKey) {
			t.Errorf("Delete(%q) error = %v, want ErrInvalidKey", k, err)
		}
	}
	list, err := s.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 0 {
		t.Fatalf("invalid keys left objects behind: %v", list)
	}
}

// testLarge puts an object bigger than any sensible buffer through a
// reader that does not say its size.
func testLarge(t *testing.T, s ost.Storage) {
	const size = 12<<20 + 7
	pattern := func() io.Reader { return io.LimitReader(&counting{}, size) }
	if err := s.Put(context.Background(), "big/object", struct{ io.Reader }{pattern()}, -1); err != nil {
		t.Fatal(err)
	}
	info, err := s.Stat(context.Background(), "big/object")
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != size {
		t.Fatalf("size = %d, want %d", info.Size, size)
	}
	rc, err := s.Get(context.Background(), "big/object")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	want := pattern()
	a, b := make([]byte, 64<<10), make([]byte, 64<<10)
	var off int64
	for {
		n, err := io.ReadFull(rc, a)
		if _, werr := io.ReadFull(want, b[:n]); werr != nil {
			t.Fatalf("object longer than what was put at %d", off)
		}
		if !bytes.Equal(a[:n], b[:n]) {
			t.Fatalf("object differs near offset %d", off)
		}
		off += int64(n)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if off != size {
		t.Fatalf("read %d bytes, want %d", off, size)
	}
}

// testShortBody: a reader that ends before the announced size must not
// leave an object behind.
func testShortBody(t *testing.T, s ost.Storage) {
	err := s.Put(context.Background(), "short", bytes.NewReader([]byte("abc")), 10)
	if err == nil {
		t.Fatal("Put of 3 bytes announced as 10 succeeded")
	}
	if _, err := s.Stat(context.Background(), "short"); !errors.Is(err, ost.ErrNotFound) {
		t.Fatalf("Stat after a failed Put error = %v, want ErrNotFound", err)
	}
}

type counting struct{ n byte }

func (c *counting) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = c.n
		c.n = c.n*31 + 7
	}
	return len(p), nil
}

// testStreamUnknownSize puts an object of unknown size, spanning several
// parts of any sensible part size, through a reader that hands out small
// uneven chunks (as a network stream does), and reads it back whole.
func testStreamUnknownSize(t *testing.T, s ost.Storage) {
	const size = 21<<20 + 12345
	src := &chunky{r: io.LimitReader(&counting{}, size)}
	if err := s.Put(context.Background(), "stream/object", src, -1); err != nil {
		t.Fatal(err)
	}
	rc, err := s.Get(context.Background(), "stream/object")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, want := sha256.New(), sha256.New()
	n, err := io.Copy(got, rc)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(want, io.LimitReader(&counting{}, size))
	if n != size || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatalf("read back %d bytes (sha256 %x), want %d bytes (sha256 %x)", n, got.Sum(nil), int64(size), want.Sum(nil))
	}
}

// chunky hands out at most 7919 bytes a read.
type chunky struct{ r io.Reader }

func (c *chunky) Read(p []byte) (int, error) {
	if len(p) > 7919 {
		p = p[:7919]
	}
	return c.r.Read(p)
}

func testGetRange(t *testing.T, s ost.Storage) {
	ctx := context.Background()
	data := []byte("0123456789abcdefghij")
	put(t, s, "r/obj", data)
	put(t, s, "r/empty", nil)
	cases := []struct {
		key    string
		off, n int64
		want   string
	}{
		{"r/obj", 0, -1, string(data)},
		{"r/obj", 0, 5, "01234"},
		{"r/obj", 10, 3, "abc"},
		{"r/obj", 15, -1, "fghij"},
		{"r/obj", 15, 100, "fghij"},
		{"r/obj", 19, 1, "j"},
		{"r/obj", 20, -1, ""},
		{"r/obj", 20, 5, ""},
		{"r/obj", 3, 0, ""},
		{"r/empty", 0, -1, ""},
		{"r/empty", 0, 10, ""},
	}
	for _, c := range cases {
		rc, err := s.GetRange(ctx, c.key, c.off, c.n)
		if err != nil {
			t.Errorf("GetRange(%s, %d, %d): %v", c.key, c.off, c.n, err)
			continue
		}
		b, err := io.ReadAll(rc)
		_ = rc.Close()
		if err != nil || string(b) != c.want {
			t.Errorf("GetRange(%s, %d, %d) = %q, %v; want %q", c.key, c.off, c.n, b, err, c.want)
		}
	}
	for _, c := range []struct{ off, n int64 }{{21, 1}, {21, -1}, {-1, 5}} {
		if rc, err := s.GetRange(ctx, "r/obj", c.off, c.n); !errors.Is(err, ost.ErrInvalidRange) {
			if err == nil {
				_ = rc.Close()
			}
			t.Errorf("GetRange(r/obj, %d, %d) error = %v, want ErrInvalidRange", c.off, c.n, err)
		}
	}
	if _, err := s.GetRange(ctx, "r/none", 0, 1); !errors.Is(err, ost.ErrNotFound) {
		t.Errorf("GetRange of a missing object error = %v, want ErrNotFound", err)
	}
	if _, err := s.GetRange(ctx, "../x", 0, 1); !errors.Is(err, ost.ErrInvalidKey) {
		t.Errorf("GetRange(../x) error = %v, want ErrInvalidKey", err)
	}
}

// gate is a reader that hands out one chunk, tells it did, then waits
// to be released and ends with err (io.EOF for a whole object).
type gate struct {
	first   []byte
	started chan struct{}
	release chan struct{}
	err     error
	sent    bool
}

func newGate(first []byte, err error) *gate {
	return &gate{first: first, started: make(chan struct{}), release: make(chan struct{}), err: err}
}

func (g *gate) Read(p []byte) (int, error) {
	if !g.sent {
		g.sent = true
		n := copy(p, g.first)
		g.first = g.first[n:]
		if len(g.first) > 0 {
			g.sent = false
			return n, nil
		}
		close(g.started)
		return n, nil
	}
	<-g.release
	return 0, g.err
}

// testAtomicVisibility: while a Put is under way (its reader has handed
// out more than one part's worth and waits), the object is not there to
// Get, Stat or List, and a previous object at the key still reads whole.
func testAtomicVisibility(t *testing.T, s ost.Storage) {
	ctx := context.Background()
	put(t, s, "v/old", []byte("previous"))
	first := bytes.Repeat([]byte("x"), 6<<20)
	for _, key := range []string{"v/new", "v/old"} {
		g := newGate(first, io.EOF)
		done := make(chan error, 1)
		go func() { done <- s.Put(ctx, key, g, -1) }()
		select {
		case <-g.started:
		case err := <-done:
			t.Fatalf("Put(%s) ended before its reader did: %v", key, err)
		}
		if key == "v/new" {
			if _, err := s.Stat(ctx, key); !errors.Is(err, ost.ErrNotFound) {
				t.Errorf("Stat(%s) during its Put error = %v, want ErrNotFound", key, err)
			}
			if rc, err := s.Get(ctx, key); !errors.Is(err, ost.ErrNotFound) {
				if err == nil {
					_ = rc.Close()
				}
				t.Errorf("Get(%s) during its Put error = %v, want ErrNotFound", key, err)
			}
			list, err := s.List(ctx, "v/n")
			if err != nil || len(list) != 0 {
				t.Errorf("List during a Put = %v, %v; want nothing", list, err)
			}
		} else if got := string(get(t, s, key)); got != "previous" {
			t.Errorf("Get(%s) during a Put that replaces it = %d bytes, want the previous object", key, len(got))
		}
		close(g.release)
		if err := <-done; err != nil {
			t.Fatalf("Put(%s): %v", key, err)
		}
		if info, err := s.Stat(ctx, key); err != nil || info.Size != int64(len(first)) {
			t.Fatalf("Stat(%s) after its Put = %+v, %v; want %d bytes", key, info, err, len(first))
		}
	}
}

// testFailedPut: a Put whose reader fails after more than one part's
// worth (an upload cut off mid-way), or whose context ends, leaves no
// object, and keeps the previous one whole.
func testFailedPut(t *testing.T, s ost.Storage) {
	ctx := context.Background()
	cut := errors.New("connection reset")
	first := bytes.Repeat([]byte("y"), 6<<20)
	put(t, s, "f/old", []byte("previous"))
	for _, key := range []string{"f/new", "f/old"} {
		g := newGate(first, cut)
		close(g.release)
		if err := s.Put(ctx, key, g, -1); err == nil {
			t.Fatalf("Put(%s) of a cut-off stream succeeded", key)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	g := newGate(first, io.EOF)
	done := make(chan error, 1)
	go func() { done <- s.Put(cctx, "f/cancelled", g, -1) }()
	<-g.started
	cancel()
	close(g.release)
	if err := <-done; err == nil {
		t.Fatal("Put whose context ended succeeded")
	}
	for _, key := range []string{"f/new", "f/cancelled"} {
		if _, err := s.Stat(ctx, key); !errors.Is(err, ost.ErrNotFound) {
			t.Errorf("Stat(%s) after a failed Put error = %v, want ErrNotFound", key, err)
		}
	}
	if got := string(get(t, s, "f/old")); got != "previous" {
		t.Errorf("a failed Put over f/old left %d bytes, want the previous object", len(got))
	}
	list, err := s.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Key != "f/old" {
		t.Errorf("List after failed Puts = %v, want only f/old", list)
	}
}
