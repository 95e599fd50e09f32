package manager

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/errandci/errand/manager/ost"
	"github.com/errandci/errand/manager/ost/posix"
	"github.com/errandci/errand/manager/ost/s3"
	"github.com/errandci/errand/manager/scheduler"
	"github.com/errandci/errand/manager/store"
	"github.com/errandci/errand/manager/store/postgres"
	"github.com/errandci/errand/manager/store/sqlite"
)

// TokenPaths returns where a manager with this data dir keeps the tokens
// it generated. Client commands on the manager's machine read the admin
// token there.
func TokenPaths(dataDir string) (admin, registration string) {
	return filepath.Join(dataDir, "admin.token"), filepath.Join(dataDir, "registration.token")
}

// Open opens the store and the object storage that cfg names, under
// cfg.DataDir, fills in missing tokens from the data dir (generating them
// on first start) and returns the server. Stop closes what Open opened.
func Open(ctx context.Context, cfg Config) (*Server, error) {
	cfg.SetDefaults()
	if cfg.DataDir == "" {
		return nil, errors.New("invalid manager configuration: a data dir is required")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	adminPath, regPath := TokenPaths(cfg.DataDir)
	var err error
	if cfg.AdminToken == "" {
		if cfg.AdminToken, err = loadOrCreateToken(cfg.Log, adminPath, "admin"); err != nil {
			return nil, err
		}
	}
	if cfg.RegistrationToken == "" {
		if cfg.RegistrationToken, err = loadOrCreateToken(cfg.Log, regPath, "registration"); err != nil {
			return nil, err
		}
	}
	objects, err := openObjects(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if cfg.ID == "" {
		if cfg.ID, err = loadOrCreateID(ctx, cfg.Log, objects); err != nil {
			closeIf(objects)
			return nil, err
		}
	}
	st, err := openStore(ctx, cfg)
	if err != nil {
		closeIf(objects)
		return nil, err
	}
	s, err := New(cfg, st, objects)
	if err != nil {
		_ = st.Close()
		closeIf(objects)
		return nil, err
	}
	s.closers = append(s.closers, st)
	if c, ok := objects.(io.Closer); ok {
		s.closers = append(s.closers, c)
	}
	return s, nil
}

func closeIf(v any) {
	if c, ok := v.(io.Closer); ok {
		_ = c.Close()
	}
}

func openStore(ctx context.Context, cfg Config) (store.Store, error) {
	switch {
	case cfg.Store == "sqlite":
		path := filepath.Join(cfg.DataDir, "errand.db")
		st, err := sqlite.Open(ctx, path)
		if err != nil {
			return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
		}
		cfg.Log.WithField("path", path).Info("store: sqlite")
		return st, nil
	case strings.HasPrefix(cfg.Store, "postgres://"), strings.HasPrefix(cfg.Store, "postgresql://"):
		st, err := postgres.Open(ctx, cfg.Store, postgres.WithLogger(cfg.Log))
		if err != nil {
			// The URL may hold a password: name the store by its host.
			return nil, fmt.Errorf("open postgres store %s: %w", redactURL(cfg.Store), err)
		}
		cfg.Log.WithField("url", redactURL(cfg.Store)).Info("store: postgres")
		return st, nil
	}
	return nil, fmt.Errorf("store: unknown store %q (want sqlite or a postgres:// URL)", cfg.Store)
}

func openObjects(ctx context.Context, cfg Config) (ost.Storage, error) {
	switch {
	case cfg.Objects == "posix":
		dir := filepath.Join(cfg.DataDir, "objects")
		s, err := posix.New(dir)
		if err != nil {
			return nil, fmt.Errorf("open object storage: %w", err)
		}
		cfg.Log.WithField("path", dir).Info("object storage: posix")
		return s, nil
	case strings.HasPrefix(cfg.Objects, "s3://"):
		c, err := s3.ParseURL(cfg.Objects)
		if err != nil {
			return nil, fmt.Errorf("object storage: %w", err)
		}
		// Credentials come from the environment only, never a flag or
		// the URL, so that they appear in no process list or log.
		c.AccessKey, c.SecretKey = os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY")
		c.PartSize, c.Concurrency = uint64(max(cfg.ObjectsPartSize, 0)), uint(max(cfg.ObjectsConcurrency, 0))
		s, err := s3.New(ctx, c)
		if err != nil {
			return nil, fmt.Errorf("open object storage: %w", err)
		}
		cfg.Log.WithFields(logrus.Fields{"endpoint": c.Endpoint, "bucket": c.Bucket, "base": c.Base}).
			Info("object storage: s3")
		return s, nil
	}
	return nil, fmt.Errorf("object storage: unknown backend %q (want posix or s3://bucket/base)", cfg.Objects)
}

// idKey is where the manager's identity is kept in object storage.
const idKey = "manager/id"

// maxManagerIDLen bounds a stored identity.
const maxManagerIDLen = 128

// loadOrCreateID reads the manager's identity from the object storage, or
// stores a new one there on first start. Replicas that start together may
// both write one: each reads back what was stored last, and a replica
// restarted later reads the same.
func loadOrCreateID(ctx context.Context, log *logrus.Logger, objects ost.Storage) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, idTimeout)
	defer cancel()
	read := func() (string, error) {
		rc, err := objects.Get(ctx, idKey)
		if err != nil {
			return "", err
		}
		defer rc.Close()
		b, err := io.ReadAll(io.LimitReader(rc, maxManagerIDLen+1))
		if err != nil {
			return "", fmt.Errorf("read manager identity: %w", err)
		}
		id := strings.TrimSpace(string(b))
		if id == "" || len(id) > maxManagerIDLen {
			return "", fmt.Errorf("manager identity in object storage at %s: want 1 to %d characters", idKey, maxManagerIDLen)
		}
		return id, nil
	}
	id, err := read()
	if err == nil {
		return id, nil
	}
	if !errors.Is(err, ost.ErrNotFound) {
		return "", fmt.Errorf("manager identity: %w", err)
	}
	secret, err := scheduler.NewSecret(12)
	if err != nil {
		return "", err
	}
	id = "m-" + secret
	if err := objects.Put(ctx, idKey, strings.NewReader(id), int64(len(id))); err != nil {
		return "", fmt.Errorf("store manager identity: %w", err)
	}
	if id, err = read(); err != nil {
		return "", fmt.Errorf("manager identity: %w", err)
	}
	log.WithField("manager_id", id).Info("generated the manager's identity")
	return id, nil
}

// idTimeout bounds reading or storing the manager's identity.
const idTimeout = 30 * time.Second

// redactURL returns a database URL without its password, for messages.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// loadOrCreateToken reads a token file, or writes a new random token to
// it (mode 0600) if there is none. The token itself is never logged.
func loadOrCreateToken(log *logrus.Logger, path, name string) (string, error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		tok := strings.TrimSpace(string(b))
		if len(tok) < minTokenLen {
			return "", fmt.Errorf("%s token in %s is shorter than %d characters", name, path, minTokenLen)
		}
		log.WithField("path", path).Infof("using the %s token stored in the data dir", name)
		return tok, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("read %s token: %w", name, err)
	}
	tok, err := scheduler.NewSecret(32)
	if err != nil {
		return "", err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("write %s token: %w", name, err)
	}
	if _, err := f.WriteString(tok + "\n"); err != nil {
		_ = f.Close()
		return "", fmt.Errorf("write %s token: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("write %s token: %w", name, err)
	}
	log.WithField("path", path).Infof("generated a %s token", name)
	return tok, nil
}
