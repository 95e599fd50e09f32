package runtimetest

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/errandci/errand"
	"github.com/errandci/errand/internal/workspace"
	"github.com/errandci/errand/tasks"
	"github.com/errandci/errand/tasks/runtime"
)

// workspaceOf is the stage's workspace as the driver's archive methods
// get it.
func (s *stage) workspaceOf() *runtime.Workspace {
	s.seq++
	task := &errand.Task{ID: taskID(s.t, s.seq), RunID: "r1", Type: s.h.Driver.Name() + ".execute", DelegateID: "d1",
		Dependencies: []errand.DependencyResult{s.dep}}
	return &runtime.Workspace{Task: task, Stage: tasks.Stage{RunID: "r1", Stage: "build"}, Result: &s.res, InitID: s.dep.Task}
}

// entry is one tar entry as the cases compare them.
type entry struct {
	name, link, data string
	dir              bool
}

func readEntries(t *testing.T, rc io.ReadCloser) ([]entry, error) {
	t.Helper()
	defer rc.Close()
	tr := tar.NewReader(rc)
	var out []entry
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
			return out, nil
		}
		if err != nil {
			return out, err
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return out, err
		}
		out = append(out, entry{name: hdr.Name, link: hdr.Linkname, data: string(b), dir: hdr.Typeflag == tar.TypeDir})
	}
}

// testArchive reads entries out of a workspace and puts entries into
// it: links are kept as links and never followed either way, and no
// path leaves the workspace.
func testArchive(t *testing.T, rt Runtime) {
	s := initialize(t, rt)
	d := s.h.Driver
	ctx := context.Background()
	ws := s.workspaceOf()
	s.mustRun("mkdir -p out/sub other", "echo a > out/a.txt", "echo b > out/sub/b.txt", "echo o > other/o",
		"ln -s /etc out/etc", "ln -s a.txt out/link", "ln -s /etc up")

	rc, err := d.WorkspaceExport(ctx, ws, []string{"out", "missing", "out/sub", "other/o"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := readEntries(t, rc)
	if err != nil {
		t.Fatalf("export: %v", err)
	}
	want := []entry{{name: "other/o", data: "o\n"}, {name: "out/", dir: true}, {name: "out/a.txt", data: "a\n"},
		{name: "out/etc", link: "/etc"}, {name: "out/link", link: "a.txt"},
		{name: "out/sub/", dir: true}, {name: "out/sub/b.txt", data: "b\n"}}
	if !slices.Equal(got, want) {
		t.Fatalf("export of out, missing, out/sub, other/o =\n%+v\nwant\n%+v", got, want)
	}

	rc, err = d.WorkspaceExport(ctx, ws, []string{"."})
	if err != nil {
		t.Fatal(err)
	}
	all, err := readEntries(t, rc)
	if err != nil {
		t.Fatalf("export of the whole workspace: %v", err)
	}
	names := map[string]bool{}
	for _, e := range all {
		names[e.name] = true
	}
	for _, n := range []string{"out/", "out/sub/b.txt", "other/o", "up"} {
		if !names[n] {
			t.Errorf("export of . lacks %s: %+v", n, all)
		}
	}
	for n := range names {
		if strings.HasPrefix(n, "up/") || strings.HasPrefix(n, "out/etc/") || strings.HasPrefix(n, "/") || strings.HasPrefix(n, "..") {
			t.Errorf("export of . holds %s: a link was followed or a name leaves the workspace", n)
		}
	}

	rc, err = d.WorkspaceExport(ctx, ws, []string{"up", "out/link"})
	if err != nil {
		t.Fatal(err)
	}
	links, err := readEntries(t, rc)
	if err != nil || !slices.Equal(links, []entry{{name: "out/link", link: "a.txt"}, {name: "up", link: "/etc"}}) {
		t.Errorf("export of two links = %+v, %v; want the links themselves", links, err)
	}

	for _, p := range []string{"up/passwd", "out/etc/hostname"} {
		rc, err := d.WorkspaceExport(ctx, ws, []string{p})
		if err == nil {
			_, err = readEntries(t, rc)
		}
		if !errors.Is(err, workspace.ErrThroughLink) {
			t.Errorf("export of %s (below a link) error = %v, want ErrThroughLink", p, err)
		}
	}
	for _, p := range []string{"../x", "/etc"} {
		rc, err := d.WorkspaceExport(ctx, ws, []string{p})
		if err == nil {
			_, err = readEntries(t, rc)
		}
		if !errors.Is(err, workspace.ErrOutside) {
			t.Errorf("export of %s error = %v, want ErrOutside", p, err)
		}
	}

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range []struct {
		hdr  tar.Header
		data string
	}{
		{tar.Header{Typeflag: tar.TypeDir, Name: "in/", Mode: 0o755}, ""},
		{tar.Header{Typeflag: tar.TypeReg, Name: "in/deep/c.txt", Mode: 0o644, Size: 2}, "c\n"},
		{tar.Header{Typeflag: tar.TypeSymlink, Name: "in/l", Linkname: "deep/c.txt"}, ""},
		{tar.Header{Typeflag: tar.TypeReg, Name: "out/a.txt", Mode: 0o600, Size: 4}, "new\n"},
	} {
		if err := tw.WriteHeader(&e.hdr); err != nil {
			t.Fatal(err)
		}
		_, _ = tw.Write([]byte(e.data))
	}
	_ = tw.Close()
	if err := d.WorkspaceImport(ctx, ws, &buf); err != nil {
		t.Fatalf("import: %v", err)
	}
	if logs := s.mustRun("cat in/deep/c.txt in/l out/a.txt", "readlink in/l"); logs != "c\nc\nnew\ndeep/c.txt\n" {
		t.Fatalf("after the import the workspace reads %q", logs)
	}

	outside := t.TempDir()
	bad := []struct {
		name string
		hdrs []tar.Header
	}{
		{"dotdot", []tar.Header{{Typeflag: tar.TypeReg, Name: "../evil", Size: 1}}},
		{"absolute", []tar.Header{{Typeflag: tar.TypeReg, Name: "/evil", Size: 1}}},
		{"through its own link", []tar.Header{{Typeflag: tar.TypeSymlink, Name: "esc", Linkname: outside},
			{Typeflag: tar.TypeReg, Name: "esc/evil", Size: 1}}},
		{"device", []tar.Header{{Typeflag: tar.TypeChar, Name: "dev", Devmajor: 1, Devminor: 3}}},
		{"hard link", []tar.Header{{Typeflag: tar.TypeLink, Name: "hard", Linkname: "/etc/passwd"}}},
	}
	for _, c := range bad {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, h := range c.hdrs {
			h.Mode = 0o644
			if err := tw.WriteHeader(&h); err != nil {
				t.Fatal(err)
			}
			if h.Size > 0 {
				_, _ = tw.Write([]byte("x"))
			}
		}
		_ = tw.Close()
		if err := d.WorkspaceImport(ctx, ws, &buf); err == nil {
			t.Errorf("import %s: no error", c.name)
		}
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("an import wrote outside the workspace: %v", entries)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(rt.Workspace(s.res)), "evil")); err == nil {
		t.Errorf("an import wrote ../evil")
	}
}
