package pipeline

import (
	"fmt"
	"slices"

	"github.com/errandci/errand"

	"github.com/errandci/errand/tasks"
)

// validateStageArtifacts checks the artifacts a stage and its steps
// declare: patterns that could leave the workspace (absolute, with ..)
// are refused here, with their path.
func validateStageArtifacts(p string, s *Stage, errs *Errors) {
	checkArtifacts(p+".artifacts", s.Artifacts, errs)
	for i, st := range s.Steps {
		if st != nil {
			checkArtifacts(fmt.Sprintf("%s.steps[%d].artifacts", p, i), st.Artifacts, errs)
		}
	}
}

func checkArtifacts(p string, a *tasks.Artifacts, errs *Errors) {
	if a == nil {
		return
	}
	for _, problem := range a.Problems() {
		errs.add(p+"."+problem[0], problem[1])
	}
}

// declaresArtifacts reports whether the stage or one of its steps keeps
// artifacts.
func (s *Stage) declaresArtifacts() bool {
	if s.Artifacts != nil {
		return true
	}
	for _, st := range s.Steps {
		if st != nil && st.Artifacts != nil {
			return true
		}
	}
	return false
}

// validateNeedsArtifacts checks that each stage named by a
// needs_artifacts exists, declares artifacts and is one the stage
// depends on (directly or through others), so that its artifacts are
// kept before the stage starts.
func validateNeedsArtifacts(c *Config, index map[string]int, errs *Errors) {
	for i, s := range c.Stages {
		if s == nil {
			continue
		}
		seen := map[string]bool{}
		for j, name := range s.NeedsArtifacts {
			np := fmt.Sprintf("stages[%d].needs_artifacts[%d]", i, j)
			k, ok := index[name]
			switch {
			case name == "":
				errs.add(np, "must not be empty")
			case name == s.Name:
				errs.add(np, "a stage cannot need its own artifacts")
			case !ok:
				errs.addf(np, "no stage named %q%s", name, suggest(name, sortedKeys(index)))
			case seen[name]:
				errs.addf(np, "%q is named twice", name)
			case !c.Stages[k].declaresArtifacts():
				errs.addf(np, "stage %q declares no artifacts", name)
			case !dependsOn(c, index, s, name, map[string]bool{}):
				errs.addf(np, "stage %q must be among this stage's depends (directly or through another stage), so that its artifacts exist before this stage starts", name)
			}
			seen[name] = true
		}
	}
}

// dependsOn reports whether s depends on the stage named name, directly
// or through other stages.
func dependsOn(c *Config, index map[string]int, s *Stage, name string, visited map[string]bool) bool {
	for _, d := range s.Depends {
		if d.Stage == name {
			return true
		}
		k, ok := index[d.Stage]
		if !ok || visited[d.Stage] || c.Stages[k] == nil {
			continue
		}
		visited[d.Stage] = true
		if dependsOn(c, index, c.Stages[k], name, visited) {
			return true
		}
	}
	return false
}

// artifactDeps adds to deps, the dependencies of stage s's first task,
// one on the cleanup task of each stage whose artifacts s needs (with
// always): the stage's own artifacts are kept by its cleanup, so s
// starts once every artifact of those stages is kept, or will not be.
func artifactDeps(deps []errand.Dependency, s *Stage, plan *Plan, index map[string]int, skipped []bool) []errand.Dependency {
	for _, name := range s.NeedsArtifacts {
		j := index[name]
		if skipped[j] {
			continue
		}
		id := plan.Stages[j].CleanupID
		if !slices.ContainsFunc(deps, func(d errand.Dependency) bool { return d.Task == id }) {
			deps = append(deps, errand.Dependency{Task: id, Condition: errand.Always})
		}
	}
	return deps
}
