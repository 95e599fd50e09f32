// Package postgres is the store for several manager replicas: the engine
// over a driver of PostgreSQL through jackc/pgx/v5, where the database
// decides who leases what
// (FOR UPDATE SKIP LOCKED) and LISTEN/NOTIFY carries each replica's
// changes to the long-polls and log followers of the others.
package postgres

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
	"github.com/errandci/errand/manager/store/engine"
)

//go:embed migrations/*.sql
var migrations embed.FS

// migrationLock is the pg_advisory_lock key that serialises migrations of
// replicas starting at once ("errand" in ASCII).
const migrationLock int64 = 0x65727261_6e64

// defaultMaxConns sizes the pool when the URL does not (pool_max_conns).
const defaultMaxConns = 16

// Store is the store.Store on a PostgreSQL database shared by any number
// of managers: the engine over this package's Driver.
type Store = engine.Engine

// Driver is the store.Driver of a PostgreSQL database.
type Driver struct {
	pool *pgxpool.Pool
	log  logrus.FieldLogger
	// origin tells this store's notifications from other managers'.
	origin string
	// channel is the LISTEN/NOTIFY channel, one per schema.
	channel string

	subs store.Subscribers

	notifier *notifier
	listener *listener

	closeMu   sync.RWMutex
	closed    bool
	closeOnce sync.Once
	closeErr  error
}

var _ store.Driver = (*Driver)(nil)

// Option changes how Open sets a store up.
type Option func(*Driver)

// WithLogger sets the logger of the store's background work (the
// listener's reconnects, failed notifications).
func WithLogger(l logrus.FieldLogger) Option {
	return func(s *Driver) { s.log = l }
}

// Open connects to the database at url (postgres://…; a search_path
// parameter selects the schema), applies the migrations it has not seen
// under an advisory lock, and starts listening for the changes of other
// managers.
func Open(ctx context.Context, url string, opts ...Option) (*Store, error) {
	d, err := OpenDriver(ctx, url, opts...)
	if err != nil {
		return nil, err
	}
	return engine.New(d), nil
}

// OpenDriver connects as Open does and returns the driver alone.
func OpenDriver(ctx context.Context, url string, opts ...Option) (*Driver, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse postgres url: %w", err)
	}
	if !strings.Contains(url, "pool_max_conns") {
		cfg.MaxConns = defaultMaxConns
	}
	origin := make([]byte, 8)
	if _, err := rand.Read(origin); err != nil {
		return nil, fmt.Errorf("postgres origin: %w", err)
	}
	s := &Driver{
		log:    logrus.StandardLogger(),
		origin: hex.EncodeToString(origin),
	}
	for _, o := range opts {
		o(s)
	}
	if s.pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		return nil, fmt.Errorf("connect postgres: %w", err)
	}
	if err := s.migrate(ctx); err != nil {
		s.pool.Close()
		return nil, fmt.Errorf("migrate postgres: %w", err)
	}
	var schema string
	if err := s.pool.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		s.pool.Close()
		return nil, fmt.Errorf("postgres schema: %w", err)
	}
	s.channel = "errand_changes_" + schema
	s.notifier = newNotifier(s)
	s.listener, err = startListener(ctx, s, cfg.ConnConfig.Copy())
	if err != nil {
		s.notifier.stop()
		s.pool.Close()
		return nil, err
	}
	return s, nil
}

// migrate applies the embedded migrations in name order, each once, in
// its own transaction, while holding an advisory lock so that replicas
// starting together take turns.
func (s *Driver) migrate(ctx context.Context) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrationLock); err != nil {
		return fmt.Errorf("advisory lock: %w", err)
	}
	defer func() {
		// A lock left behind would only outlive a connection we are
		// about to drop; still, give it back.
		_, _ = conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, migrationLock)
	}()
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		name TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return fmt.Errorf("list migrations: %w", err)
	}
	sort.Strings(names)
	for _, name := range names {
		base := strings.TrimPrefix(name, "migrations/")
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM schema_migrations WHERE name = $1`, base).Scan(&n); err != nil {
			return fmt.Errorf("check migration %s: %w", base, err)
		}
		if n > 0 {
			continue
		}
		body, err := migrations.ReadFile(name)
		if err != nil {
			return fmt.Errorf("read migration %s: %w", base, err)
		}
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, string(body)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (name) VALUES ($1)`, base)
			return err
		})
		if err != nil {
			return fmt.Errorf("apply migration %s: %w", base, err)
		}
	}
	return nil
}

// Ping checks that the database answers.
func (s *Driver) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("ping postgres: %w", err)
	}
	return nil
}

// Close stops the listener and the notifier (sending what is still
// waiting), waits for writes in progress and closes the pool. Later writes
// fail with errand.ErrUnavailable.
func (s *Driver) Close() error {
	s.closeOnce.Do(func() {
		s.closeMu.Lock()
		s.closed = true
		s.closeMu.Unlock()
		s.listener.stop()
		s.notifier.stop()
		s.pool.Close()
		s.subs.Clear()
	})
	return s.closeErr
}

// Subscribe calls fn after each committed change, this manager's and,
// through LISTEN/NOTIFY, every other manager's on the same database.
func (s *Driver) Subscribe(fn func(store.Change)) (unsubscribe func()) {
	return s.subs.Add(fn)
}

// querier runs statements: a transaction, or the pool for a write that is
// one statement.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// wtx is a write in progress: a transaction, or a single statement that
// is atomic on its own.
type wtx struct {
	s       *Driver
	ctx     context.Context
	tx      querier
	changes []store.Change
}

func (w *wtx) exec(query string, args ...any) (pgconn.CommandTag, error) {
	return w.tx.Exec(w.ctx, query, args...)
}

func (w *wtx) query(query string, args ...any) (pgx.Rows, error) {
	return w.tx.Query(w.ctx, query, args...)
}

func (w *wtx) queryRow(query string, args ...any) pgx.Row {
	return w.tx.QueryRow(w.ctx, query, args...)
}

// sendBatch runs the queued statements in one round trip; their
// callbacks see each one's outcome.
func (w *wtx) sendBatch(b *pgx.Batch) error {
	return w.tx.SendBatch(w.ctx, b).Close()
}

func (w *wtx) emit(c store.Change) { w.changes = append(w.changes, c) }

// maxRetries bounds how often a write that lost a deadlock or a
// serialisation race runs again.
const maxRetries = 20

// writeMode says how write runs its function.
type writeMode int

const (
	// writeTransaction runs the function inside BEGIN … COMMIT.
	writeTransaction writeMode = iota
	// writeImplicit runs a function that sends one statement, or one
	// batch of statements, which PostgreSQL runs atomically as an
	// implicit transaction: two round trips fewer than BEGIN … COMMIT.
	writeImplicit
)

// write runs fn in a transaction, again when PostgreSQL aborted it for a
// deadlock or a serialisation failure, and delivers the changes it
// emitted once committed: at once to this manager's subscribers, and
// through the notifier to the others.
func (s *Driver) write(ctx context.Context, fn func(*wtx) error, mode ...writeMode) error {
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed {
		return errand.Errorf(errand.CodeUnavailable, "store closed")
	}
	single := len(mode) > 0 && mode[0] == writeImplicit
	carry := true
	for attempt := 0; ; attempt++ {
		w := &wtx{s: s, ctx: ctx}
		var (
			err     error
			fnDone  bool
			boarded bool
			taken   []store.Change
		)
		if single {
			w.tx = s.pool
			err = fn(w)
		} else {
			err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
				w.tx = tx
				if err := fn(w); err != nil {
					return err
				}
				fnDone = true
				if !carry {
					return nil
				}
				var err error
				taken, boarded, err = s.notifier.board(ctx, tx, w.changes)
				return err
			})
		}
		if boarded {
			s.notifier.landed(taken, err == nil)
		}
		if err == nil {
			s.subs.Deliver(w.changes)
			if !boarded {
				s.notifier.add(w.changes)
			}
			return nil
		}
		// Notifications never fail a write: one that failed while it
		// carried them (PostgreSQL refused the notifications or, at
		// commit, had no room for them, and rolled back) runs again
		// without.
		var pe *pgconn.PgError
		if boarded && fnDone && errors.As(err, &pe) {
			carry = false
			continue
		}
		if !retryable(err) || attempt >= maxRetries {
			return storageFull(err)
		}
		// Back off a little, more each time, so that the winners of the
		// race get through.
		select {
		case <-ctx.Done():
			return fmt.Errorf("retry postgres write: %w", ctx.Err())
		case <-time.After(time.Duration(attempt+1) * time.Millisecond):
		}
	}
}

// storageFull makes an error that says PostgreSQL ran out of disk
// (SQLSTATE 53100) errand.ErrStorageFull; it returns others as they are.
func storageFull(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "53100" {
		return fmt.Errorf("%w: %v", errand.Errorf(errand.CodeStorageFull, "the disk of the postgres database is full"), err)
	}
	return err
}

// retryable reports whether err aborted a transaction that may succeed if
// run again.
func retryable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "40001" || pe.Code == "40P01"
	}
	return false
}

// newToken returns 128 random bits in hex: a lease token.
func newToken() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("lease token: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// notFound is the error of a missing row.
func notFound(what, id string) error {
	return errand.Errorf(errand.CodeNotFound, "%s %s not found", what, id)
}
