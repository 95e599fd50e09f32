// Package pipelines is the manager's stored-pipeline service: named
// pipelines (a config or where it is in a source, variables, triggers,
// notifications) and the runs started from them, numbered per pipeline
// by the store.
package pipelines

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/manager/runs"
	"github.com/errandci/errand/manager/store"
)

// Config is the service's configuration.
type Config struct {
	// ReadConfig reads the config at path in a pipeline's source, at
	// commit (empty: the commit the source's ref names now), for a
	// pipeline that names its config by config_path, and returns the
	// commit it read it from: the run checks out that one. A pipeline
	// with config_path cannot start runs when it is nil.
	ReadConfig func(ctx context.Context, source *errand.Source, commit, path string) ([]byte, string, error)
	// Log receives the service's log; logrus.StandardLogger() when nil.
	Log *logrus.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// RunStarted, when set, is told of each run StartRun started (the
	// pipeline's notifications).
	RunStarted func(ctx context.Context, run *client.Run)
}

// Service stores pipelines and starts their runs through the run
// service.
type Service struct {
	cfg   Config
	log   *logrus.Logger
	now   func() time.Time
	store store.Store
	runs  *runs.Service
}

// New returns the service.
func New(cfg Config, st store.Store, rs *runs.Service) (*Service, error) {
	if st == nil || rs == nil {
		return nil, errors.New("pipelines: a store and a run service are required")
	}
	if cfg.Log == nil {
		cfg.Log = logrus.StandardLogger()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Service{cfg: cfg, log: cfg.Log, now: cfg.Now, store: st, runs: rs}, nil
}

// Href is where pipeline name is in the API.
func Href(name string) string { return "/api/v1/pipelines/" + name }

// spec is what the store keeps of a pipeline: its spec without the name.
type spec struct {
	Config     string                   `json:"config,omitempty"`
	Filename   string                   `json:"filename,omitempty"`
	ConfigPath string                   `json:"config_path,omitempty"`
	Source     json.RawMessage          `json:"source,omitempty"`
	Variables  map[string]string        `json:"variables,omitempty"`
	Triggers   *client.PipelineTriggers `json:"triggers,omitempty"`
	Notify     []client.PipelineNotify  `json:"notify,omitempty"`
}

func encodeSpec(p *client.PipelineSpec) (json.RawMessage, error) {
	return json.Marshal(spec{Config: p.Config, Filename: p.Filename, ConfigPath: p.ConfigPath, Source: p.Source,
		Variables: p.Variables, Triggers: p.Triggers, Notify: p.Notify})
}

// Spec decodes a stored pipeline's spec.
func Spec(p *store.Pipeline) (*client.PipelineSpec, error) {
	var sp spec
	if err := json.Unmarshal(p.Spec, &sp); err != nil {
		return nil, fmt.Errorf("decode pipeline %s: %w", p.Name, err)
	}
	return &client.PipelineSpec{Name: p.Name, Config: sp.Config, Filename: sp.Filename, ConfigPath: sp.ConfigPath,
		Source: sp.Source, Variables: sp.Variables, Triggers: sp.Triggers, Notify: sp.Notify}, nil
}

func view(p *store.Pipeline, withConfig bool) (*client.Pipeline, error) {
	sp, err := Spec(p)
	if err != nil {
		return nil, err
	}
	if !withConfig {
		sp.Config = ""
	}
	return &client.Pipeline{Kind: client.KindPipeline, ID: p.Name, Href: Href(p.Name), PipelineSpec: *sp,
		CreatedAt: p.CreatedAt, UpdatedAt: p.UpdatedAt, CreatedBy: p.CreatedBy, LastNumber: p.LastNumber,
		RunsHref: Href(p.Name) + "/runs"}, nil
}

// Create stores a pipeline made by who; a name that exists is
// errand.CodeConflict.
func (s *Service) Create(ctx context.Context, p *client.PipelineSpec, who string) (*client.Pipeline, error) {
	if err := Validate(p); err != nil {
		return nil, err
	}
	raw, err := encodeSpec(p)
	if err != nil {
		return nil, fmt.Errorf("encode pipeline %s: %w", p.Name, err)
	}
	out, err := s.store.PipelineCreate(ctx, store.PipelineCreateParams{Pipeline: &store.Pipeline{Name: p.Name, Spec: raw, CreatedBy: who}, Now: s.now()})
	if err != nil {
		return nil, err
	}
	s.log.WithFields(logrus.Fields{"pipeline": p.Name, "created_by": who}).Info("pipeline created")
	return view(out, true)
}

// Get returns a pipeline with its config.
func (s *Service) Get(ctx context.Context, name string) (*client.Pipeline, error) {
	p, err := s.store.PipelineGet(ctx, name)
	if err != nil {
		return nil, err
	}
	return view(p, true)
}

// List returns a page of pipelines in name order, without their configs.
func (s *Service) List(ctx context.Context, f client.PipelineFilter) (*client.PipelineList, error) {
	ps, err := s.store.PipelineList(ctx, store.PipelineListParams{After: f.After, Prefix: f.Prefix, Limit: f.Limit})
	if err != nil {
		return nil, err
	}
	out := &client.PipelineList{Kind: client.KindPipelineList, Items: make([]*client.Pipeline, 0, len(ps))}
	for _, p := range ps {
		v, err := view(p, false)
		if err != nil {
			return nil, err
		}
		out.Items = append(out.Items, v)
	}
	if len(ps) == f.Limit && len(ps) > 0 {
		out.Next = ps[len(ps)-1].Name
	}
	return out, nil
}

// Update replaces pipeline name's spec; the spec's name must be empty or
// the same.
func (s *Service) Update(ctx context.Context, name string, p *client.PipelineSpec) (*client.Pipeline, error) {
	if p.Name == "" {
		p.Name = name
	}
	if p.Name != name {
		return nil, errand.Errorf(errand.CodeInvalid, "name: %q is not the pipeline's name %q (a pipeline is not renamed)", p.Name, name)
	}
	if err := Validate(p); err != nil {
		return nil, err
	}
	raw, err := encodeSpec(p)
	if err != nil {
		return nil, fmt.Errorf("encode pipeline %s: %w", p.Name, err)
	}
	out, err := s.store.PipelineUpdate(ctx, store.PipelineUpdateParams{Name: name, Spec: raw, Now: s.now()})
	if err != nil {
		return nil, err
	}
	s.log.WithField("pipeline", name).Info("pipeline updated")
	return view(out, true)
}

// Delete removes a pipeline; its runs stay, with their numbers.
func (s *Service) Delete(ctx context.Context, name string) error {
	if err := s.store.PipelineDelete(ctx, name); err != nil {
		return err
	}
	s.log.WithField("pipeline", name).Info("pipeline deleted")
	return nil
}

// TriggerParams says who or what starts a run of a pipeline, for what
// change, and with which variables beside the pipeline's.
type TriggerParams struct {
	// Kind is runs.TriggerUser, runs.TriggerWebhook, or another kind.
	Kind string
	// Who is the user, or the sender of a webhook.
	Who string
	// Event is matched against the stages' when (push, pull_request…).
	Event string
	// Ref is the branch or tag (refs/heads/main, refs/tags/v1, main);
	// the run's branch is the branch it names, unless Branch says (the
	// target branch of a pull request whose ref is refs/pull/N/head).
	Ref    string
	Branch string
	// Commit, Author and Message describe the change. A message longer
	// than MaxCommitMessage is cut.
	Commit  string
	Author  string
	Message string
	// Variables are added to the pipeline's, replacing those of the
	// same name.
	Variables map[string]string
}

// StartRun starts a run of pipeline name: its config, its variables
// under p's, as a run numbered in the pipeline, with p as its trigger.
// errand.CodeNotFound for an unknown pipeline.
func (s *Service) StartRun(ctx context.Context, name string, p TriggerParams) (*client.Run, error) {
	if err := checkTrigger(&p); err != nil {
		return nil, err
	}
	if len(p.Message) > MaxCommitMessage {
		cut := MaxCommitMessage
		for cut > 0 && !utf8.RuneStart(p.Message[cut]) {
			cut--
		}
		p.Message = p.Message[:cut]
	}
	stored, err := s.store.PipelineGet(ctx, name)
	if err != nil {
		return nil, err
	}
	sp, err := Spec(stored)
	if err != nil {
		return nil, err
	}
	source, err := decodeSource(sp.Source)
	if err != nil {
		return nil, fmt.Errorf("pipeline %s: %w", name, err)
	}
	if g := source; g != nil && g.Git != nil && p.Ref != "" {
		g.Git.Ref = p.Ref
	}
	config, filename, commit := sp.Config, sp.Filename, p.Commit
	if sp.ConfigPath != "" {
		if s.cfg.ReadConfig == nil {
			return nil, errand.Errorf(errand.CodeInvalid, "pipeline %s: its config is at %s in its source, and this manager reads no config from a source", name, sp.ConfigPath)
		}
		b, at, err := s.cfg.ReadConfig(ctx, source, commit, sp.ConfigPath)
		if err != nil {
			return nil, fmt.Errorf("pipeline %s: read %s from its source: %w", name, sp.ConfigPath, err)
		}
		config, filename, commit = string(b), sp.ConfigPath[strings.LastIndex(sp.ConfigPath, "/")+1:], at
	}
	vars := maps.Clone(sp.Variables)
	if vars == nil {
		vars = map[string]string{}
	}
	maps.Copy(vars, p.Variables)
	branch := p.Branch
	if branch == "" {
		branch = branchOf(p.Ref)
	}
	req := &client.RunRequest{Config: config, Filename: filename, Branch: branch, Event: p.Event,
		Env: vars, ExtStr: vars}
	// The run checks out the trigger's commit, or its ref's (the one its
	// config was read from), from the pipeline's source.
	req.Source = source
	if source != nil && source.Git != nil {
		req.Commit = commit
	}
	run, err := s.runs.Start(ctx, runs.StartParams{Request: req, Pipeline: name, Trigger: store.RunTrigger{Kind: p.Kind, Who: p.Who,
		Event: p.Event, Commit: p.Commit, Ref: p.Ref, Author: p.Author, Message: p.Message}})
	if err != nil {
		return nil, err
	}
	if s.cfg.RunStarted != nil {
		s.cfg.RunStarted(ctx, run)
	}
	return run, nil
}

// branchOf is the branch a ref names: refs/heads/x and x are x; a tag or
// another ref names none.
func branchOf(ref string) string {
	if b, ok := strings.CutPrefix(ref, "refs/heads/"); ok {
		return b
	}
	if strings.HasPrefix(ref, "refs/") {
		return ""
	}
	return ref
}

// GetRun returns run number of pipeline name, deleted or not.
func (s *Service) GetRun(ctx context.Context, name string, number int64) (*client.Run, error) {
	id, err := s.store.PipelineRunID(ctx, name, number)
	if err != nil {
		return nil, err
	}
	return s.runs.Get(ctx, id)
}

// ParseRunName reads pipeline#number.
func ParseRunName(s string) (name string, number int64, ok bool) {
	name, num, found := strings.Cut(s, "#")
	if !found || store.CheckPipelineName(name) != nil {
		return "", 0, false
	}
	var n int64
	if _, err := fmt.Sscanf(num, "%d", &n); err != nil || n < 1 || fmt.Sprint(n) != num {
		return "", 0, false
	}
	return name, n, true
}
