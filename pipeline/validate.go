package pipeline

import (
	"fmt"
	"path"
	"regexp"
	"strconv"
	"strings"

	"github.com/errandci/errand"
)

var (
	namePattern    = regexp.MustCompile(`^[a-z0-9_-]+$`)
	envNamePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	// hostPattern is one DNS label: a service is reached by its name.
	hostPattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
)

// Validate checks the whole config and returns every problem at once as
// Errors, each with its path (and its line, for a config read from JSON or
// YAML), or nil.
func (c *Config) Validate() error {
	return c.validate().err(c.src)
}

// validate returns every problem of the config, without lines.
func (c *Config) validate() Errors {
	var errs Errors
	if len(c.Stages) == 0 {
		errs.add("stages", "at least one stage is required")
	}
	index := map[string]int{}
	for i, s := range c.Stages {
		p := fmt.Sprintf("stages[%d]", i)
		if s == nil {
			errs.add(p, "a stage must be an object")
			continue
		}
		switch {
		case s.Name == "":
			errs.add(p+".name", "required")
		case !namePattern.MatchString(s.Name):
			errs.addf(p+".name", "%q: must match [a-z0-9_-]+", s.Name)
		default:
			if j, dup := index[s.Name]; dup {
				errs.addf(p+".name", "%q: already the name of stages[%d]", s.Name, j)
			} else {
				index[s.Name] = i
			}
		}
		validateStage(p, s, &errs)
	}
	for i, s := range c.Stages {
		if s == nil {
			continue
		}
		for j, d := range s.Depends {
			dp := fmt.Sprintf("stages[%d].depends[%d]", i, j)
			switch _, ok := index[d.Stage]; {
			case d.Stage == "":
				errs.add(dp+".stage", "required")
			case d.Stage == s.Name:
				errs.add(dp+".stage", "a stage cannot depend on itself")
			case !ok:
				errs.addf(dp+".stage", "no stage named %q%s", d.Stage, suggest(d.Stage, sortedKeys(index)))
			}
			for k, cond := range d.Conditions {
				if cond == "" || strings.Contains(string(cond), "|") || !cond.Valid() {
					errs.addf(fmt.Sprintf("%s.conditions[%d]", dp, k), "%q: want on_success, on_failure, on_skipped or always", cond)
				}
			}
		}
	}
	validateNeedsArtifacts(c, index, &errs)
	if cycle := findCycle(c.Stages, index); cycle != nil {
		errs.addf(fmt.Sprintf("stages[%d].depends", index[cycle[0]]), "dependency cycle: %s", strings.Join(cycle, " -> "))
	}
	return errs
}

func validateStage(p string, s *Stage, errs *Errors) {
	rt := s.runtimeType()
	switch rt {
	case RuntimeHost:
		if s.Runtime.Image != "" {
			errs.add(p+".runtime.image", "a host stage has no image")
		}
		if len(s.Runtime.Services) > 0 {
			errs.add(p+".runtime.services", "a host stage has no services")
		}
		if s.Runtime.Pull != "" {
			errs.add(p+".runtime.pull", "a host stage pulls no image")
		}
	case RuntimeDocker:
	default:
		errs.addf(p+".runtime.type", "%q: want host or docker%s", s.Runtime.Type, suggest(s.Runtime.Type, []string{RuntimeHost, RuntimeDocker}))
	}
	switch s.Runtime.Pull {
	case "", PullAlways, PullNever, PullIfNotPresent:
	default:
		errs.addf(p+".runtime.pull", "%q: want always, never or if-not-present%s", s.Runtime.Pull, suggest(s.Runtime.Pull, []string{PullAlways, PullNever, PullIfNotPresent}))
	}
	services := map[string]bool{}
	for i, svc := range s.Runtime.Services {
		sp := fmt.Sprintf("%s.runtime.services[%d]", p, i)
		switch {
		case svc.Name == "":
			errs.add(sp+".name", "required")
		case !hostPattern.MatchString(svc.Name):
			errs.addf(sp+".name", "%q: must be a host name (lower-case letters, digits and -)", svc.Name)
		case services[svc.Name]:
			errs.addf(sp+".name", "%q: two services have this name", svc.Name)
		}
		services[svc.Name] = true
		if svc.Image == "" {
			errs.add(sp+".image", "required")
		}
		validateEnv(sp+".environment", svc.Environment, errs)
	}
	validateEnv(p+".environment", s.Environment, errs)
	for i, name := range s.Secrets {
		if !envNamePattern.MatchString(name) {
			errs.addf(fmt.Sprintf("%s.secrets[%d]", p, i), "%q: must match [A-Za-z_][A-Za-z0-9_]*", name)
		}
	}
	if s.Timeout < 0 {
		errs.add(p+".timeout", "must not be negative")
	}
	if s.Approval != nil && s.Approval.Approvers < 1 {
		errs.add(p+".approval.approvers", "must be at least 1")
	}
	if s.When != nil {
		for i, b := range s.When.Branch {
			if _, err := path.Match(b, ""); err != nil || b == "" {
				errs.addf(fmt.Sprintf("%s.when.branch[%d]", p, i), "%q: not a branch name or pattern", b)
			}
		}
		for i, e := range s.When.Event {
			if e == "" {
				errs.add(fmt.Sprintf("%s.when.event[%d]", p, i), "must not be empty")
			}
		}
	}
	if _, err := parseSize(s.Resources.Memory); err != nil {
		errs.add(p+".resources.memory", err.Error())
	}
	if s.Resources.CPUs < 0 {
		errs.add(p+".resources.cpus", "must not be negative")
	}
	if len(s.Steps) == 0 {
		errs.add(p+".steps", "at least one step is required")
	}
	steps := map[string]int{}
	ordinary := false
	for i, st := range s.Steps {
		sp := fmt.Sprintf("%s.steps[%d]", p, i)
		if st == nil {
			errs.add(sp, "a step must be an object")
			continue
		}
		switch {
		case st.Name == "":
			errs.add(sp+".name", "required")
		case !namePattern.MatchString(st.Name):
			errs.addf(sp+".name", "%q: must match [a-z0-9_-]+", st.Name)
		default:
			if j, dup := steps[st.Name]; dup {
				errs.addf(sp+".name", "%q: already the name of steps[%d]", st.Name, j)
			} else {
				steps[st.Name] = i
			}
		}
		if len(st.Commands) == 0 {
			errs.add(sp+".commands", "at least one command is required")
		}
		if rt == RuntimeDocker && st.Image == "" && s.Runtime.Image == "" {
			errs.add(sp+".image", "required for a docker stage (here or as runtime.image)")
		}
		if rt == RuntimeHost && st.Image != "" {
			errs.add(sp+".image", "a host stage has no image")
		}
		if st.Timeout < 0 {
			errs.add(sp+".timeout", "must not be negative")
		}
		if strings.HasPrefix(st.WorkingDir, "/") || hasDotDot(st.WorkingDir) {
			errs.addf(sp+".working_dir", "%q: must be relative to the workspace, without ..", st.WorkingDir)
		}
		validateEnv(sp+".environment", st.Environment, errs)
		if st.When != nil {
			for k, status := range st.When.Status {
				if status != StatusSuccess && status != StatusFailure {
					errs.addf(fmt.Sprintf("%s.when.status[%d]", sp, k), "%q: want success or failure", status)
				}
			}
			if st.runsOn(StatusFailure) && !st.runsOn(StatusSuccess) && !ordinary {
				errs.add(sp+".when.status", "a step that runs only on failure needs an earlier step without when")
			}
		}
		if !st.reporter() {
			ordinary = true
		}
	}
	validateStageArtifacts(p, s, errs)
	// The selector becomes the selector of the stage's tasks: the same
	// rules as a task's (errand.SelectorProblems).
	for _, problem := range errand.SelectorProblems("selector", s.Selector) {
		field, msg, _ := strings.Cut(problem, ": ")
		errs.add(p+"."+field, msg)
	}
}

func validateEnv(p string, env map[string]string, errs *Errors) {
	for _, k := range sortedKeys(env) {
		if !envNamePattern.MatchString(k) {
			errs.addf(p+"."+k, "%q: must match [A-Za-z_][A-Za-z0-9_]*", k)
		}
	}
}

func hasDotDot(p string) bool {
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return true
		}
	}
	return false
}

// findCycle returns the stage names of a dependency cycle, the first
// repeated at the end, or nil.
func findCycle(stages []*Stage, index map[string]int) []string {
	const (
		unseen = iota
		visiting
		done
	)
	mark := make([]int, len(stages))
	var stack []string
	var visit func(i int) []string
	visit = func(i int) []string {
		mark[i] = visiting
		stack = append(stack, stages[i].Name)
		for _, d := range stages[i].Depends {
			j, ok := index[d.Stage]
			if !ok || j == i {
				continue // reported elsewhere
			}
			switch mark[j] {
			case visiting:
				for k, name := range stack {
					if name == d.Stage {
						return append(append([]string{}, stack[k:]...), d.Stage)
					}
				}
			case unseen:
				if c := visit(j); c != nil {
					return c
				}
			}
		}
		stack = stack[:len(stack)-1]
		mark[i] = done
		return nil
	}
	for i, s := range stages {
		if s != nil && mark[i] == unseen {
			if c := visit(i); c != nil {
				return c
			}
		}
	}
	return nil
}

// parseSize reads a memory size: a number with an optional binary unit
// (b, k, m, g, t, also written kb, kib, …). Empty is 0.
func parseSize(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	t := strings.ToLower(strings.TrimSpace(s))
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	n, err := strconv.ParseFloat(t[:i], 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q: want a size such as 512m or 2GiB", s)
	}
	mult := map[string]float64{"": 1, "b": 1,
		"k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10,
		"m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
		"g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
		"t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40,
	}
	m, ok := mult[strings.TrimSpace(t[i:])]
	if !ok {
		return 0, fmt.Errorf("%q: unknown unit (want b, k, m, g or t)", s)
	}
	return int64(n * m), nil
}
