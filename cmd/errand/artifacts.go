package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/alecthomas/units"

	"github.com/errandci/errand/client"
	"github.com/errandci/errand/internal/workspace"
	"github.com/errandci/errand/manager"
	"github.com/errandci/errand/manager/artifacts"
	"github.com/errandci/errand/tasks"
)

func init() { commands = append(commands, addArtifactsCommand) }

// artifactFlags are the manager's flags of artifacts and of the object
// storage they are kept in.
type artifactFlags struct {
	maxSize, maxRunSize units.Base2Bytes
	expireIn            string
	partSize            units.Base2Bytes
}

// addArtifactFlags adds the manager's artifact and object storage flags
// to cmd; apply puts them into cfg.
func addArtifactFlags(cmd *kingpin.CmdClause, cfg *manager.Config) *artifactFlags {
	f := &artifactFlags{}
	cmd.Flag("artifacts-max-size", "Largest artifact (one file) a step or stage may keep, e.g. 10GiB; a larger one is refused with its name.").
		Envar("ERRAND_ARTIFACTS_MAX_SIZE").Default(units.Base2Bytes(artifacts.DefaultMaxSize).String()).BytesVar(&f.maxSize)
	cmd.Flag("artifacts-max-run-size", "Most bytes the artifacts of one run may hold in all, e.g. 50GiB.").
		Envar("ERRAND_ARTIFACTS_MAX_RUN_SIZE").Default(units.Base2Bytes(artifacts.DefaultMaxRunSize).String()).BytesVar(&f.maxRunSize)
	cmd.Flag("artifacts-expire-in", "How long artifacts are kept when their declaration says not: days (30d), weeks (2w) or a duration (12h).").
		Envar("ERRAND_ARTIFACTS_EXPIRE_IN").Default("30d").StringVar(&f.expireIn)
	cmd.Flag("objects-part-size", "Part size of multipart uploads to S3 (at least 5MiB); an upload holds part size × concurrency in memory.").
		Envar("ERRAND_OBJECTS_PART_SIZE").Default("8MiB").BytesVar(&f.partSize)
	cmd.Flag("objects-concurrency", "Parts of one upload to S3 sent at once.").
		Envar("ERRAND_OBJECTS_CONCURRENCY").Default("4").IntVar(&cfg.ObjectsConcurrency)
	return f
}

// apply checks the flags and puts them into cfg.
func (f *artifactFlags) apply(cfg *manager.Config) error {
	d, err := tasks.ParseExpiry(f.expireIn)
	if err != nil {
		return usageErrorf("--artifacts-expire-in: %v", err)
	}
	if f.maxSize <= 0 || f.maxRunSize <= 0 {
		return usageErrorf("--artifacts-max-size and --artifacts-max-run-size must be positive")
	}
	if f.partSize < 5<<20 || f.partSize > 5<<30 {
		return usageErrorf("--objects-part-size must be between 5MiB and 5GiB, not %s", f.partSize)
	}
	if cfg.ObjectsConcurrency < 1 || cfg.ObjectsConcurrency > 64 {
		return usageErrorf("--objects-concurrency must be between 1 and 64, not %d", cfg.ObjectsConcurrency)
	}
	cfg.ArtifactsMaxSize, cfg.ArtifactsMaxRunSize, cfg.ArtifactsExpireIn = int64(f.maxSize), int64(f.maxRunSize), d
	cfg.ObjectsPartSize = int64(f.partSize)
	return nil
}

func addArtifactsCommand(app *kingpin.Application, g *globals) {
	cmd := app.Command("artifacts", "List and download the artifacts of a run: the files its steps and stages kept.")

	list := cmd.Command("list", "List a run's artifacts in the order they were kept.").Alias("ls")
	lf := addClientFlags(list)
	listRun := list.Arg("run", "Run id.").Required().String()
	var listStage string
	list.Flag("stage", "Only the artifacts of this stage.").Envar("ERRAND_STAGE").StringVar(&listStage)
	list.Action(g.action(func(ctx context.Context) error {
		items, err := runArtifacts(ctx, lf.client(), *listRun, listStage, "")
		if err != nil {
			return err
		}
		if lf.output == "json" {
			return printJSON(g.Stdout, &client.ArtifactList{Kind: client.KindArtifactList, Items: items})
		}
		rows := make([][]string, len(items))
		for i, a := range items {
			size, sum := strconv.FormatInt(a.Size, 10), a.SHA256
			if a.LinkTarget != "" {
				size, sum = "-> "+a.LinkTarget, "-"
			}
			if len(sum) > 12 {
				sum = sum[:12]
			}
			expires := localTime(a.ExpiresAt)
			if a.Expired {
				expires = "expired " + expires
			}
			rows[i] = []string{a.Stage, dash(a.Step), a.Path, size, sum, dash(a.ContentType), expires}
		}
		return table(g.Stdout, []string{"STAGE", "STEP", "PATH", "SIZE", "SHA256", "TYPE", "EXPIRES"}, rows)
	}))

	get := cmd.Command("get", "Download a run's artifacts into a directory, checking each one's SHA-256; links are made as links.")
	gf := addConnectionFlags(get)
	getRun := get.Arg("run", "Run id.").Required().String()
	var pattern, dir, getStage string
	get.Flag("path", "Only the artifacts whose path matches this pattern (** for any number of directories).").
		Envar("ERRAND_ARTIFACT_PATH").StringVar(&pattern)
	get.Flag("stage", "Only the artifacts of this stage.").Envar("ERRAND_STAGE").StringVar(&getStage)
	get.Flag("output-dir", "Directory the artifacts are written into, at their paths (created if needed).").Short('o').
		Envar("ERRAND_OUTPUT_DIR").Default(".").StringVar(&dir)
	get.Action(g.action(func(ctx context.Context) error {
		if pattern != "" {
			if err := tasks.CheckArtifactPattern(pattern); err != nil {
				return usageErrorf("--path: %v", err)
			}
		}
		c := gf.client()
		items, err := runArtifacts(ctx, c, *getRun, getStage, pattern)
		if err != nil {
			return err
		}
		n, err := downloadArtifacts(ctx, c, items, dir, g)
		if err != nil {
			return err
		}
		fmt.Fprintf(g.Stdout, "%d artifacts written to %s\n", n, dir)
		return nil
	}))
}

// runArtifacts lists all of a run's artifacts, of one stage and matching
// a pattern when they are given.
func runArtifacts(ctx context.Context, c *client.HTTP, run, stage, pattern string) ([]*client.Artifact, error) {
	var out []*client.Artifact
	match := &tasks.Artifacts{Paths: []string{pattern}}
	after := ""
	for {
		page, err := c.RunArtifacts(ctx, run, after)
		if err != nil {
			return nil, err
		}
		for _, a := range page.Items {
			if (stage == "" || a.Stage == stage) && (pattern == "" || match.Match(a.Path)) {
				out = append(out, a)
			}
		}
		if page.Next == "" {
			return out, nil
		}
		after = page.Next
	}
}

// downloadArtifacts writes artifacts under dir, through an os.Root of it
// (a path from the manager cannot lead out of it): each file is written
// to a temporary name, checked against its SHA-256 and renamed into
// place. Expired artifacts are reported and left out.
func downloadArtifacts(ctx context.Context, c *client.HTTP, items []*client.Artifact, dir string, g *globals) (int, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return 0, err
	}
	defer root.Close()
	n := 0
	for _, a := range items {
		name, err := workspace.CleanPath(a.Path)
		if err != nil || name == "." {
			return n, fmt.Errorf("artifact %q: %v", a.Path, err)
		}
		if a.Expired {
			fmt.Fprintf(g.Stderr, "errand: %s: expired at %s, not downloaded\n", a.Path, a.ExpiresAt.Format(time.RFC3339))
			continue
		}
		rel := filepath.FromSlash(name)
		if d := filepath.Dir(rel); d != "." {
			if err := root.MkdirAll(d, 0o755); err != nil {
				return n, fmt.Errorf("%s: %w", a.Path, err)
			}
		}
		if a.LinkTarget != "" {
			if err := replaceWith(root, rel, func(tmp string) error { return root.Symlink(a.LinkTarget, tmp) }); err != nil {
				return n, fmt.Errorf("%s: %w", a.Path, err)
			}
			n++
			continue
		}
		if err := replaceWith(root, rel, func(tmp string) error { return fetchArtifact(ctx, c, a, root, tmp) }); err != nil {
			return n, fmt.Errorf("%s: %w", a.Path, err)
		}
		fmt.Fprintf(g.Stdout, "%s (%d bytes)\n", a.Path, a.Size)
		n++
	}
	return n, nil
}

// replaceWith makes rel by making a temporary name beside it with make,
// then renaming it over rel.
func replaceWith(root *os.Root, rel string, create func(tmp string) error) error {
	tmp := filepath.Join(filepath.Dir(rel), ".errand-"+strconv.FormatInt(time.Now().UnixNano(), 36)+"-"+path.Base(filepath.ToSlash(rel)))
	if err := create(tmp); err != nil {
		_ = root.Remove(tmp)
		return err
	}
	if fi, err := root.Lstat(rel); err == nil && fi.IsDir() {
		_ = root.Remove(tmp)
		return fmt.Errorf("a directory is in the way")
	}
	if err := root.Rename(tmp, rel); err != nil {
		_ = root.Remove(tmp)
		return err
	}
	return nil
}

// fetchArtifact downloads an artifact's content into tmp and checks it.
func fetchArtifact(ctx context.Context, c *client.HTTP, a *client.Artifact, root *os.Root, tmp string) error {
	content, err := c.GetArtifact(ctx, a.TaskID, a.Path, 0)
	if err != nil {
		return err
	}
	defer content.Body.Close()
	mode := fs.FileMode(a.Mode) & 0o777
	if mode == 0 {
		mode = 0o644
	}
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode|0o200)
	if err != nil {
		return err
	}
	h := sha256.New()
	written, err := io.Copy(io.MultiWriter(f, h), content.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	switch {
	case written != a.Size:
		return fmt.Errorf("downloaded %d bytes of %d", written, a.Size)
	case sum != a.SHA256:
		return errors.New("the content does not match its SHA-256: " + sum + ", want " + a.SHA256)
	}
	return root.Chmod(tmp, mode)
}
