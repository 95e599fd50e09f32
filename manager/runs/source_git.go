package runs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/internal/gitsource"
	"github.com/errandci/errand/livelog"
	"github.com/errandci/errand/pipeline"
)

// DefaultResolveTimeout bounds one git ls-remote of a run's source on
// the manager; gitsource.DefaultAttempts bound the tries.
const DefaultResolveTimeout = 30 * time.Second

// checkSource refuses a request whose source cannot be valid, before
// anything is stored or fetched.
func checkSource(req *client.RunRequest) error {
	if err := pipeline.ValidateSource(req.Source, req.Commit); err != nil {
		return errand.Errorf(errand.CodeInvalid, "%v", err)
	}
	return nil
}

// resolveSource returns the commit a run checks out: the request's, or
// the commit its source's ref names now, asked of the repository once
// (git ls-remote) so that every stage checks out the same one. The
// credential, when the source names one, is read from the secret source
// and added to secrets. What fails is a setup error of the run, with
// git's words and the credential masked: a repository that cannot be
// read, a ref it does not have, a credential that is missing or too
// short to be masked.
func (s *Service) resolveSource(ctx context.Context, req *client.RunRequest, secrets map[string]string) (string, error) {
	src := req.Source.Git
	cred, err := s.sourceCredential(ctx, src, secrets)
	if err != nil {
		return "", err
	}
	if req.Commit != "" {
		return req.Commit, nil
	}
	commit, err := gitsource.Resolve(ctx, s.resolveOptions(), src, cred)
	switch {
	case err == nil:
		s.log.WithFields(logrus.Fields{"url": src.URL, "ref": src.Ref, "commit": commit}).Debug("source resolved")
		return commit, nil
	case ctx.Err() != nil:
		return "", context.Cause(ctx)
	case errors.Is(err, gitsource.ErrRefNotFound):
		return "", pipeline.FieldError{Path: "source.git.ref", Message: err.Error()}
	}
	return "", pipeline.FieldError{Path: "source.git.url", Message: fmt.Sprintf("resolve the ref: %v", err)}
}

// resolveOptions are the options of the manager's own git commands.
func (s *Service) resolveOptions() gitsource.Options {
	opts := s.cfg.Git
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultResolveTimeout
	}
	return opts
}

// sourceCredential reads the credential src names, if any, from the
// secret source, and adds it to secrets (nil: not kept).
func (s *Service) sourceCredential(ctx context.Context, src *errand.GitSource, secrets map[string]string) (*gitsource.Credential, error) {
	name := src.Credentials
	if name == "" {
		return nil, nil
	}
	v, ok, err := s.cfg.Secrets.Secret(ctx, name)
	switch {
	case err != nil:
		return nil, fmt.Errorf("read secret %s: %w", name, err)
	case !ok:
		return nil, pipeline.FieldError{Path: "source.git.credentials", Message: fmt.Sprintf("secret %s is not set on the manager", name)}
	}
	if _, short := livelog.SecretParts(v); short > 0 {
		return nil, pipeline.FieldError{Path: "source.git.credentials", Message: fmt.Sprintf(
			"secret %s: its value is shorter than %d bytes and cannot be masked in logs; use a longer value", name, livelog.MinSecretLen)}
	}
	cred, err := gitsource.ParseCredential(v)
	if err != nil {
		return nil, pipeline.FieldError{Path: "source.git.credentials", Message: fmt.Sprintf("secret %s: %v", name, err)}
	}
	if secrets != nil {
		secrets[name] = v
	}
	return cred, nil
}

// ReadSourceFile returns the file at path in a Git source's commit (its
// ref's commit now when commit is empty) and the commit it was read
// from, for a stored pipeline whose config is in its source. A file
// over pipeline.MaxConfigSize is refused. The error holds git's words
// with the credential masked.
func (s *Service) ReadSourceFile(ctx context.Context, src *errand.Source, commit, path string) ([]byte, string, error) {
	if src == nil || src.Git == nil {
		return nil, "", errand.Errorf(errand.CodeInvalid, "the pipeline has no git source to read %s from", path)
	}
	if err := pipeline.ValidateSource(src, commit); err != nil {
		return nil, "", errand.Errorf(errand.CodeInvalid, "%v", err)
	}
	cred, err := s.sourceCredential(ctx, src.Git, nil)
	if err != nil {
		return nil, "", errand.Errorf(errand.CodeInvalid, "%v", err)
	}
	data, at, err := gitsource.ReadFile(ctx, s.resolveOptions(), src.Git, commit, path, pipeline.MaxConfigSize, cred)
	switch {
	case err == nil:
		return data, at, nil
	case ctx.Err() != nil:
		return nil, "", context.Cause(ctx)
	case errand.ErrorCode(err) != errand.CodeInternal:
		return nil, "", err
	}
	return nil, "", errand.Errorf(errand.CodeInvalid, "%v", err)
}
