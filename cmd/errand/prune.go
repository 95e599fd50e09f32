package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/tasks/docker"
)

func init() { commands = append(commands, addPruneCommand) }

// pruneFlags are the flags of errand prune.
type pruneFlags struct {
	dryRun    bool
	tempDir   string
	stateDirs []string
	conn      *clientFlags
}

func addPruneCommand(app *kingpin.Application, g *globals) {
	cmd := app.Command("prune", "Remove what Errand left on this host: containers, networks and volumes with Errand's labels, "+
		"and workspaces of runs that are over. Nothing that a live errand run or a delegate's unfinished stage uses is removed.")
	f := &pruneFlags{}
	cmd.Flag("dry-run", "List what would be removed; remove nothing.").Envar("ERRAND_DRY_RUN").BoolVar(&f.dryRun)
	cmd.Flag("temp-dir", "Where errand run makes its temporary directories (errand-run-*).").Envar("ERRAND_TEMP_DIR").
		Default(os.TempDir()).StringVar(&f.tempDir)
	cmd.Flag("state-dir", "A delegate's state directory whose exec workspaces to prune (repeatable; default: ~/.errand/delegate when it exists).").
		Envar("ERRAND_STATE_DIR").StringsVar(&f.stateDirs)
	f.conn = addClientFlags(cmd)
	cmd.Action(g.action(func(ctx context.Context) error { return prune(ctx, f, g.Stdout, g.Stderr) }))
}

// Actions of a pruneItem.
const (
	pruneRemoved     = "removed"
	pruneWouldRemove = "would remove"
	pruneKept        = "kept"
	pruneFailed      = "failed"
)

// pruneItem is one thing prune looked at and what it did.
type pruneItem struct {
	Kind   string `json:"kind"` // container, network, volume or workspace
	Name   string `json:"name"`
	Action string `json:"action"`
	Reason string `json:"reason"`
}

// pruneList is the JSON form of prune's answer.
type pruneList struct {
	Kind  string      `json:"kind"`
	Items []pruneItem `json:"items"`
}

// pruneAPITimeout bounds each call to the Docker daemon or the manager.
const pruneAPITimeout = 30 * time.Second

// recentlyChanged is how long a temporary directory of errand run is left
// alone after it changed: a run may have made it and not opened it yet.
const recentlyChanged = 10 * time.Second

// pruner decides and removes.
type pruner struct {
	f     *pruneFlags
	items []pruneItem
	errs  []error

	// The manager, asked once.
	asked      bool
	mc         *client.HTTP
	managerID  string
	managerErr error
	stages     map[string]decision
}

// decision is whether a thing may go, and why.
type decision struct {
	remove bool
	reason string
}

func keep(format string, args ...any) decision {
	return decision{reason: fmt.Sprintf(format, args...)}
}

func drop(format string, args ...any) decision {
	return decision{remove: true, reason: fmt.Sprintf(format, args...)}
}

// prune removes (or, with --dry-run, lists) what Errand left on this host.
func prune(ctx context.Context, f *pruneFlags, stdout, stderr io.Writer) error {
	dirs := [][2]string{{"--temp-dir", f.tempDir}}
	for _, d := range f.stateDirs {
		dirs = append(dirs, [2]string{"--state-dir", d})
	}
	for _, d := range dirs {
		if fi, err := os.Stat(d[1]); errors.Is(err, os.ErrNotExist) {
			return usageErrorf("%s %s: no such directory", d[0], d[1])
		} else if err != nil {
			return usageErrorf("%s %s: %v", d[0], d[1], err)
		} else if !fi.IsDir() {
			return usageErrorf("%s %s: not a directory", d[0], d[1])
		}
	}
	p := &pruner{f: f, items: []pruneItem{}, stages: map[string]decision{}}
	p.docker(ctx, stderr)
	p.tempDirs(ctx)
	p.stateDirs(ctx)
	if f.conn.output == "json" {
		if err := printJSON(stdout, pruneList{Kind: "prune", Items: p.items}); err != nil {
			return err
		}
	} else if len(p.items) == 0 {
		fmt.Fprintln(stdout, "nothing to prune")
	} else {
		rows := make([][]string, 0, len(p.items))
		for _, it := range p.items {
			rows = append(rows, []string{it.Action, it.Kind, it.Name, it.Reason})
		}
		if err := table(stdout, []string{"ACTION", "KIND", "NAME", "REASON"}, rows); err != nil {
			return err
		}
	}
	return errors.Join(p.errs...)
}

// apply records d for a thing and carries it out unless this is a dry run.
func (p *pruner) apply(kind, name string, d decision, remove func() error) {
	it := pruneItem{Kind: kind, Name: name, Action: pruneKept, Reason: d.reason}
	switch {
	case !d.remove:
	case p.f.dryRun:
		it.Action = pruneWouldRemove
	default:
		if err := remove(); err != nil {
			it.Action, it.Reason = pruneFailed, err.Error()
			p.errs = append(p.errs, err)
		} else {
			it.Action = pruneRemoved
		}
	}
	p.items = append(p.items, it)
}

// docker prunes the daemon's resources with Errand's labels.
func (p *pruner) docker(ctx context.Context, stderr io.Writer) {
	actx, cancel := context.WithTimeout(ctx, pruneAPITimeout)
	defer cancel()
	if err := docker.Available(actx); err != nil {
		fmt.Fprintf(stderr, "errand: Docker resources not checked: %v\n", err)
		return
	}
	c, err := docker.NewClient()
	if err != nil {
		p.errs = append(p.errs, err)
		return
	}
	defer c.Close()
	rs, err := docker.Managed(actx, c)
	if err != nil {
		p.errs = append(p.errs, err)
		return
	}
	for _, r := range rs {
		d := p.decideDocker(ctx, r.Labels)
		p.apply(r.Kind, r.Name, d, func() error {
			rctx, cancel := context.WithTimeout(ctx, pruneAPITimeout)
			defer cancel()
			return docker.Remove(rctx, c, r)
		})
	}
}

// decideDocker is the rule for one Docker resource:
//   - errand run's (errand.local): removed once its process is gone, when
//     it ran on this host;
//   - a delegate's (errand.manager): removed once the manager that made it
//     (the one --manager names, with the same identity) says its stage is
//     over: the stage's cleanup task ended, or the manager knows neither
//     that task nor the stage's initialize task;
//   - anything else (made by an older Errand) is kept.
func (p *pruner) decideDocker(ctx context.Context, labels map[string]string) decision {
	if v, ok := labels[docker.LabelLocal]; ok {
		o, err := docker.ParseLocalOwner(v)
		if err != nil {
			return keep("unreadable %s label: %v", docker.LabelLocal, err)
		}
		alive, err := o.Alive()
		switch {
		case err != nil:
			return keep("made by errand run (pid %d): %v", o.PID, err)
		case alive:
			return keep("its errand run (pid %d) still runs", o.PID)
		}
		return drop("its errand run (pid %d) is gone", o.PID)
	}
	if m := labels[docker.LabelManager]; m != "" {
		return p.decideStage(ctx, m, labels[docker.LabelRun], labels[docker.LabelInitialize])
	}
	return keep("no owner label (made by an older Errand): remove it by hand if it is stale")
}

// manager returns the manager's client and identity, asked once.
func (p *pruner) manager(ctx context.Context) (*client.HTTP, string, error) {
	if !p.asked {
		p.asked = true
		p.mc = p.f.conn.client()
		actx, cancel := context.WithTimeout(ctx, pruneAPITimeout)
		defer cancel()
		l, err := p.mc.ListDelegates(actx)
		switch {
		case err != nil:
			p.managerErr = fmt.Errorf("cannot ask the manager at %s: %w", p.f.conn.manager, err)
		case l.ManagerID == "":
			p.managerErr = fmt.Errorf("the manager at %s has no identity (an older version)", p.f.conn.manager)
		default:
			p.managerID = l.ManagerID
		}
	}
	return p.mc, p.managerID, p.managerErr
}

// decideStage decides for a delegate's resource of manager m, run and
// initialize task init.
func (p *pruner) decideStage(ctx context.Context, m, run, init string) decision {
	mc, id, err := p.manager(ctx)
	if err != nil {
		return keep("%v", err)
	}
	if id != m {
		return keep("made for manager %s; the manager at %s is %s", m, p.f.conn.manager, id)
	}
	if init == "" {
		return keep("no %s label", docker.LabelInitialize)
	}
	if d, ok := p.stages[init]; ok {
		return d
	}
	d := p.stageOver(ctx, mc, run, init)
	p.stages[init] = d
	return d
}

// stageOver asks the manager whether the stage of initialize task init
// is over.
func (p *pruner) stageOver(ctx context.Context, mc *client.HTTP, run, init string) decision {
	actx, cancel := context.WithTimeout(ctx, pruneAPITimeout)
	defer cancel()
	if run != "" {
		after := ""
		for {
			l, err := mc.ListTasks(actx, &client.TaskFilter{RunID: run, Type: errand.TypeDockerCleanup, After: after, Limit: 1000})
			if err != nil {
				return keep("cannot ask the manager about run %s: %v", run, err)
			}
			for _, t := range l.Items {
				if t.Affinity != init {
					continue
				}
				if t.State.Terminal() {
					return drop("its stage is over (cleanup task %s %s)", t.ID, t.State)
				}
				return keep("its stage is not over (cleanup task %s %s)", t.ID, t.State)
			}
			if l.Next == "" {
				break
			}
			after = l.Next
		}
	}
	t, err := mc.GetTask(actx, init)
	switch {
	case errors.Is(err, errand.ErrNotFound):
		return drop("the manager no longer knows its stage (initialize task %s)", init)
	case err != nil:
		return keep("cannot ask the manager about task %s: %v", init, err)
	}
	return keep("the manager knows no cleanup task of its stage (initialize task %s %s)", init, t.State)
}

// tempDirs prunes errand run's temporary directories that no process
// uses any more.
func (p *pruner) tempDirs(ctx context.Context) {
	dirs, err := filepath.Glob(filepath.Join(p.f.tempDir, "errand-run-*"))
	if err != nil {
		p.errs = append(p.errs, fmt.Errorf("list %s: %w", p.f.tempDir, err))
		return
	}
	if len(dirs) == 0 {
		return
	}
	used := pathsInUse()
	for _, dir := range dirs {
		fi, err := os.Lstat(dir)
		if err != nil || !fi.IsDir() {
			continue
		}
		var d decision
		switch {
		case used.holds(dir):
			d = keep("a process works in it (a run in progress)")
		case time.Since(fi.ModTime()) < recentlyChanged:
			d = keep("changed in the last %s (a run may be starting)", recentlyChanged)
		default:
			d = drop("no process uses it: its errand run is gone")
		}
		p.apply("workspace", dir, d, func() error { return removeAll(dir) })
	}
}

// stateDirs prunes the exec workspaces of delegates' state directories:
// one directory per run, removed once no process uses it and the manager
// reports every task of that run ended.
func (p *pruner) stateDirs(ctx context.Context) {
	dirs := p.f.stateDirs
	if len(dirs) == 0 {
		if home, err := os.UserHomeDir(); err == nil {
			def := filepath.Join(home, ".errand", "delegate")
			if _, err := os.Stat(def); err == nil {
				dirs = []string{def}
			}
		}
	}
	var used inUse
	for _, sd := range dirs {
		runs, err := os.ReadDir(filepath.Join(sd, "workspaces"))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			p.errs = append(p.errs, fmt.Errorf("read workspaces of %s: %w", sd, err))
			continue
		}
		if used == nil {
			used = pathsInUse()
		}
		for _, e := range runs {
			if !e.IsDir() {
				continue
			}
			dir := filepath.Join(sd, "workspaces", e.Name())
			d := keep("a process works in it")
			if !used.holds(dir) {
				d = p.runOver(ctx, e.Name())
			}
			p.apply("workspace", dir, d, func() error { return removeAll(dir) })
		}
	}
}

// runOver asks the manager whether every task of run ended.
func (p *pruner) runOver(ctx context.Context, run string) decision {
	mc, _, err := p.manager(ctx)
	if err != nil {
		return keep("%v", err)
	}
	actx, cancel := context.WithTimeout(ctx, pruneAPITimeout)
	defer cancel()
	n, after := 0, ""
	for {
		l, err := mc.ListTasks(actx, &client.TaskFilter{RunID: run, After: after, Limit: 1000})
		if err != nil {
			return keep("cannot ask the manager about run %s: %v", run, err)
		}
		for _, t := range l.Items {
			n++
			if !t.State.Terminal() {
				return keep("run %s is not over (task %s %s)", run, t.ID, t.State)
			}
		}
		if l.Next == "" {
			break
		}
		after = l.Next
	}
	if n == 0 {
		return keep("the manager at %s knows no task of run %s", p.f.conn.manager, run)
	}
	return drop("every task of run %s ended", run)
}

func removeAll(dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return nil
}

// inUse is the set of paths that processes of this host work in or hold
// open.
type inUse []string

// holds reports whether a path in the set is dir or lies under it.
func (u inUse) holds(dir string) bool {
	dir = filepath.Clean(dir)
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	for _, p := range u {
		if p == dir || strings.HasPrefix(p, dir+string(filepath.Separator)) {
			return true
		}
	}
	return false
}

// pathsInUse reads, from /proc, the working directories and the open files
// of every process this user may see, other than this one.
func pathsInUse() inUse {
	var out inUse
	procs, _ := os.ReadDir("/proc")
	self := os.Getpid()
	for _, e := range procs {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		base := filepath.Join("/proc", e.Name())
		if cwd, err := os.Readlink(filepath.Join(base, "cwd")); err == nil {
			out = append(out, cwd)
		}
		fds, _ := os.ReadDir(filepath.Join(base, "fd"))
		for _, fd := range fds {
			if l, err := os.Readlink(filepath.Join(base, "fd", fd.Name())); err == nil && strings.HasPrefix(l, "/") {
				out = append(out, strings.TrimSuffix(l, " (deleted)"))
			}
		}
	}
	return out
}
