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
	var cred *gitsource.Credential
	if name := src.Credentials; name != "" {
		v, ok, err := s.cfg.Secrets.Secret(ctx, name)
		switch {
		case err != nil:
			return "", fmt.Errorf("read secret %s: %w", name, err)
		case !ok:
			return "", pipeline.FieldError{Path: "source.git.credentials", Message: fmt.Sprintf("secret %s is not set on the manager", name)}
		}
		if _, short := livelog.SecretParts(v); short > 0 {
			return "", pipeline.FieldError{Path: "source.git.credentials", Message: fmt.Sprintf(
				"secret %s: its value is shorter than %d bytes and cannot be masked in logs; use a longer value", name, livelog.MinSecretLen)}
		}
		if cred, err = gitsource.ParseCredential(v); err != nil {
			return "", pipeline.FieldError{Path: "source.git.credentials", Message: fmt.Sprintf("secret %s: %v", name, err)}
		}
		secrets[name] = v
	}
	if req.Commit != "" {
		return req.Commit, nil
	}
	opts := s.cfg.Git
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultResolveTimeout
	}
	commit, err := gitsource.Resolve(ctx, opts, src, cred)
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
