package pipelines

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/manager/store"
	"github.com/errandci/errand/pipeline"
)

// Bounds of a pipeline's spec and of what a run of it is given.
const (
	MaxVariables     = 100
	MaxVariableName  = 128
	MaxVariableValue = 16 << 10
	MaxConfigPath    = 1024
	MaxSource        = 64 << 10
	MaxSecretNames   = 16
	MaxNotify        = 16
	MaxURL           = 2048
	MaxTriggerField  = 1024
	MaxCommitMessage = 4096
)

// NotifyEvents are what a notification may be sent on: failure is
// failed; waiting is a stage that waits for approval.
var NotifyEvents = []string{"started", "success", "failed", "failure", "cancelled", "finished", "waiting"}

var (
	variableName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	secretName   = variableName
)

// configFormats are the formats a config may be written in.
var configFormats = []string{".yml", ".yaml", ".json", ".jsonnet"}

// problems collects what is wrong with a spec, each with its path.
type problems pipeline.Errors

func (ps *problems) add(path, format string, args ...any) {
	*ps = append(*ps, pipeline.FieldError{Path: path, Message: fmt.Sprintf(format, args...)})
}

// err is the problems as one errand.CodeInvalid error, nil for none.
func (ps problems) err() error {
	if len(ps) == 0 {
		return nil
	}
	return errand.Errorf(errand.CodeInvalid, "%s", pipeline.Errors(ps).Error())
}

// Validate checks a pipeline's spec, every problem at once with its
// path, and applies its defaults (the config's filename). Its config
// itself is checked when a run plans it.
func Validate(p *client.PipelineSpec) error {
	var ps problems
	if err := store.CheckPipelineName(p.Name); err != nil {
		ps.add("name", "%q is not 1 to %d of a-z, 0-9, '_' and '-'", p.Name, store.MaxPipelineName)
	}
	switch {
	case p.Config == "" && p.ConfigPath == "":
		ps.add("config", "required, or config_path: where the config is in the pipeline's source")
	case p.Config != "" && p.ConfigPath != "":
		ps.add("config_path", "not with config: the config is either given or read from the source")
	case p.Config != "":
		if strings.TrimSpace(p.Config) == "" {
			ps.add("config", "empty")
		}
		if len(p.Config) > store.MaxRunConfig {
			ps.add("config", "larger than %d bytes", store.MaxRunConfig)
		}
		if p.Filename == "" {
			p.Filename = "config.yml"
		}
		if p.Filename != path.Base(p.Filename) || !slices.Contains(configFormats, strings.ToLower(path.Ext(p.Filename))) {
			ps.add("filename", "%q is not a file name with a known format (.yml, .yaml, .json or .jsonnet)", p.Filename)
		}
	default:
		checkConfigPath(&ps, p.ConfigPath)
		if p.Filename != "" {
			ps.add("filename", "not with config_path: the path's extension names the format")
		}
		if len(p.Source) == 0 {
			ps.add("config_path", "needs a source to read the config from")
		}
	}
	if len(p.Source) > 0 {
		checkSource(&ps, p.Source)
	}
	checkVariables(&ps, "variables", p.Variables)
	if t := p.Triggers; t != nil && t.Webhook != nil {
		checkSecretNames(&ps, "triggers.webhook.secrets", t.Webhook.Secrets)
	}
	if len(p.Notify) > MaxNotify {
		ps.add("notify", "%d receivers, more than %d", len(p.Notify), MaxNotify)
	}
	for i, n := range p.Notify {
		checkNotify(&ps, fmt.Sprintf("notify[%d]", i), n)
	}
	return ps.err()
}

// checkConfigPath checks where a config is in a source: a relative path
// that stays inside it, with a known format.
func checkConfigPath(ps *problems, p string) {
	clean := path.Clean(p)
	switch {
	case len(p) > MaxConfigPath:
		ps.add("config_path", "longer than %d bytes", MaxConfigPath)
	case strings.ContainsAny(p, "\\\x00") || path.IsAbs(p) || clean == ".." || strings.HasPrefix(clean, "../") || clean != p:
		ps.add("config_path", "%q is not a clean relative path inside the source", p)
	case !slices.Contains(configFormats, strings.ToLower(path.Ext(p))):
		ps.add("config_path", "%q names no known format (want .yml, .yaml, .json or .jsonnet)", p)
	}
}

// checkSource checks a pipeline's source: a JSON object of bounded
// size that decodes strictly as an errand.Source valid by
// pipeline.ValidateSource (the run checks the commit it is given).
func checkSource(ps *problems, raw json.RawMessage) {
	if len(raw) > MaxSource {
		ps.add("source", "larger than %d bytes", MaxSource)
		return
	}
	src, err := decodeSource(raw)
	if err != nil {
		ps.add("source", "%v", err)
		return
	}
	var fes pipeline.Errors
	if err := pipeline.ValidateSource(src, ""); errors.As(err, &fes) {
		*ps = append(*ps, fes...)
	} else if err != nil {
		ps.add("source", "%v", err)
	}
}

// decodeSource decodes a stored source, nil for none.
func decodeSource(raw json.RawMessage) (*errand.Source, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	var src errand.Source
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&src); err != nil {
		return nil, fmt.Errorf("not a source ({\"git\": {\"url\": ..., \"ref\": ...}}): %v", err)
	}
	return &src, nil
}

// CheckVariables checks variables given to a run: at most MaxVariables,
// names that are environment variable names outside ERRAND_, bounded
// values.
func CheckVariables(vars map[string]string) error {
	var ps problems
	checkVariables(&ps, "variables", vars)
	return ps.err()
}

func checkVariables(ps *problems, at string, vars map[string]string) {
	if len(vars) > MaxVariables {
		ps.add(at, "%d variables, more than %d", len(vars), MaxVariables)
		return
	}
	names := make([]string, 0, len(vars))
	for k := range vars {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		switch {
		case len(k) > MaxVariableName || !variableName.MatchString(k):
			ps.add(at, "%q is not a variable name (letters, digits and '_', at most %d)", k, MaxVariableName)
		case strings.HasPrefix(strings.ToUpper(k), "ERRAND_"):
			ps.add(at+"."+k, "ERRAND_ names are the manager's")
		case len(vars[k]) > MaxVariableValue:
			ps.add(at+"."+k, "longer than %d bytes", MaxVariableValue)
		}
	}
}

func checkSecretNames(ps *problems, at string, names []string) {
	if len(names) > MaxSecretNames {
		ps.add(at, "%d names, more than %d", len(names), MaxSecretNames)
		return
	}
	for i, n := range names {
		checkSecretName(ps, fmt.Sprintf("%s[%d]", at, i), n, true)
	}
}

func checkSecretName(ps *problems, at, name string, required bool) {
	switch {
	case name == "" && !required:
	case len(name) > MaxVariableName || !secretName.MatchString(name):
		ps.add(at, "%q is not a secret name (letters, digits and '_'): name a manager secret, never its value", name)
	}
}

func checkNotify(ps *problems, at string, n client.PipelineNotify) {
	var on []string
	switch {
	case (n.Webhook == nil) == (n.Slack == nil):
		ps.add(at, "exactly one of webhook and slack is required")
		return
	case n.Webhook != nil:
		checkURL(ps, at+".webhook.url", n.Webhook.URL)
		checkSecretName(ps, at+".webhook.secret", n.Webhook.Secret, false)
		on = n.Webhook.On
		at += ".webhook"
	default:
		checkSecretName(ps, at+".slack.url_secret", n.Slack.URLSecret, true)
		on = n.Slack.On
		at += ".slack"
	}
	if len(on) > len(NotifyEvents) {
		ps.add(at+".on", "%d events, more than the %d there are", len(on), len(NotifyEvents))
		return
	}
	for i, e := range on {
		if !slices.Contains(NotifyEvents, e) {
			ps.add(fmt.Sprintf("%s.on[%d]", at, i), "%q is not one of %s", e, strings.Join(NotifyEvents, ", "))
		}
	}
}

func checkURL(ps *problems, at, raw string) {
	u, err := url.Parse(raw)
	switch {
	case len(raw) > MaxURL:
		ps.add(at, "longer than %d bytes", MaxURL)
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		ps.add(at, "%q is not an http or https URL", raw)
	case u.User != nil:
		ps.add(at, "credentials in the URL would be shown to every viewer: sign with secret instead")
	}
}

// checkTrigger bounds what a trigger records.
func checkTrigger(t *TriggerParams) error {
	var ps problems
	for _, f := range []struct{ at, v string }{{"kind", t.Kind}, {"who", t.Who}, {"event", t.Event}, {"ref", t.Ref}, {"branch", t.Branch}, {"commit", t.Commit}, {"author", t.Author}} {
		if len(f.v) > MaxTriggerField {
			ps.add(f.at, "longer than %d bytes", MaxTriggerField)
		}
	}
	if t.Kind == "" {
		ps.add("kind", "required")
	}
	checkVariables(&ps, "variables", t.Variables)
	return ps.err()
}
