// Package sqlite is the embedded store: the engine over a driver of one
// SQLite file in WAL mode through modernc.org/sqlite, with a single
// writer connection and a pool of readers, so writers never fight over
// the database lock.
//
// Writes queue for the writer and are group-committed: the caller that
// gets the writer runs every write waiting at that moment in one
// transaction, and each caller returns once its own write is committed.
// The rows of leased and running tasks are kept in memory as last written,
// so that a delegate's report costs one conditional update and no read.
package sqlite

import (
	"context"
	"crypto/rand"
	"database/sql"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
	"github.com/errandci/errand/manager/store/engine"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

//go:embed migrations/*.sql
var migrations embed.FS

// readers is the size of the read pool.
const readers = 4

// Store is the store.Store on one SQLite database file: the engine over
// this package's Driver.
type Store = engine.Engine

// Driver is the store.Driver of one SQLite database file.
type Driver struct {
	rdb *sql.DB
	wdb *sql.DB
	// wconn is the one connection that writes. wsem guards it: a write
	// transaction holds the semaphore from BEGIN to COMMIT.
	wconn *sql.Conn
	wsem  chan struct{}
	// stmts caches statements prepared on wconn; used only under wsem.
	stmts map[string]*sql.Stmt
	// ctl runs the writer's BEGIN, COMMIT and ROLLBACK.
	ctl *wtx
	// version numbers task row writes; active caches the rows of leased
	// and running tasks; tokens makes lease tokens. All are used only by
	// the writer.
	version int64
	active  activeCache
	tokens  tokens
	// pending holds writes waiting for the writer, oldest first.
	pendMu  sync.Mutex
	pending []*writeReq
	closed  bool

	subs store.Subscribers

	// full is set once a write failed for want of space, until Ping
	// finds that a write of probeBytes gets through.
	full atomic.Bool
	// stop ends the checkpointer; checkpointed is closed when it has.
	stop         chan struct{}
	checkpointed chan struct{}

	closeOnce sync.Once
	closeErr  error
}

var _ store.Driver = (*Driver)(nil)

// Errors of Open for a file that is not a healthy database.
var (
	// ErrEmptyFile: the file exists but is empty. A database this
	// package creates always holds its schema, so an empty file was
	// emptied (truncated, or copied while being written), not made new.
	ErrEmptyFile = errors.New("the file is empty: not a database Errand created (restore it from a backup, or remove it to start with no data)")
	// ErrNoSchema: the file is an SQLite database without Errand's
	// schema.
	ErrNoSchema = errors.New("the database has no Errand schema (no schema_migrations table): not a database Errand created")
	// ErrCorrupt: PRAGMA quick_check found the file damaged.
	ErrCorrupt = errors.New("the database is damaged (PRAGMA quick_check failed): restore it from a backup")
)

// probeBytes is the size of the write Ping tries while the disk is full.
const probeBytes = 256 << 10

// checkpointEvery is how often the WAL is checkpointed and truncated, so
// that a burst of writes does not leave a large WAL file behind.
var checkpointEvery = time.Minute

// Open opens the database at path and applies the migrations it has not
// seen yet. With no file at path it creates one, readable by its owner
// only; an existing file must be a healthy database with Errand's schema
// (ErrEmptyFile, ErrNoSchema, ErrCorrupt otherwise). The Store is the
// only writer of the file: one manager process opens a database at a
// time.
func Open(ctx context.Context, path string) (*Store, error) {
	d, err := OpenDriver(ctx, path)
	if err != nil {
		return nil, err
	}
	return engine.New(d), nil
}

// OpenDriver opens the database at path as Open does and returns its
// driver alone.
func OpenDriver(ctx context.Context, path string) (*Driver, error) {
	created, err := prepareFile(path)
	if err != nil {
		return nil, err
	}
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "temp_store(MEMORY)")
	q.Add("_pragma", "cache_size(-65536)")
	// Checkpoint less often than every 1,000 pages: the same hot pages of
	// the queue are rewritten by most commits, and a checkpoint copies
	// each page once however many frames it has, and syncs. The WAL file
	// is cut back to 64 MiB after a checkpoint.
	q.Add("_pragma", "wal_autocheckpoint(16384)")
	q.Add("_pragma", "journal_size_limit(67108864)")
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()

	wdb, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	wdb.SetMaxOpenConns(1)
	wdb.SetMaxIdleConns(1)
	wdb.SetConnMaxLifetime(0)
	wdb.SetConnMaxIdleTime(0)
	s := &Driver{
		wdb:    wdb,
		wsem:   make(chan struct{}, 1),
		stmts:  make(map[string]*sql.Stmt),
		active: activeCache{rows: make(map[string]*taskRow)},
	}
	s.ctl = &wtx{s: s, ctx: context.WithoutCancel(ctx)}
	if s.wconn, err = wdb.Conn(ctx); err != nil {
		wdb.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	if err := s.check(ctx, created); err != nil {
		s.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	if err := s.migrate(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("migrate sqlite %s: %w", path, err)
	}

	if err := s.wconn.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) FROM tasks`).Scan(&s.version); err != nil {
		s.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}

	rq := url.Values{}
	rq.Add("_pragma", "busy_timeout(10000)")
	rq.Add("_pragma", "query_only(1)")
	rdb, err := sql.Open("sqlite", "file:"+(&url.URL{Path: path}).EscapedPath()+"?"+rq.Encode())
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	rdb.SetMaxOpenConns(readers)
	rdb.SetMaxIdleConns(readers)
	s.rdb = rdb
	if err := s.Ping(ctx); err != nil {
		s.Close()
		return nil, err
	}
	s.stop, s.checkpointed = make(chan struct{}), make(chan struct{})
	go s.checkpointLoop(path+"-wal", checkpointEvery)
	return s, nil
}

// prepareFile creates the database file, owner-only, when there is none,
// and says so; SQLite gives its -wal and -shm files the same mode. An
// existing file is made owner-only too (older versions created it 0644)
// and refused when empty.
func prepareFile(path string) (created bool, err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		if err := f.Close(); err != nil {
			return false, fmt.Errorf("create sqlite %s: %w", path, err)
		}
		return true, nil
	}
	if !errors.Is(err, fs.ErrExist) {
		return false, fmt.Errorf("create sqlite %s: %w", path, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return false, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return false, fmt.Errorf("open sqlite %s: not a regular file", path)
	}
	if fi.Size() == 0 {
		return false, fmt.Errorf("open sqlite %s: %w", path, ErrEmptyFile)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Chmod(p, 0o600); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("open sqlite %s: %w", path, err)
		}
	}
	return false, nil
}

// check refuses a damaged database, and one that is not new and has no
// schema.
func (s *Driver) check(ctx context.Context, created bool) error {
	rows, err := s.wconn.QueryContext(ctx, `PRAGMA quick_check(5)`)
	if err != nil {
		if isCorrupt(err) {
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		return fmt.Errorf("check: %w", err)
	}
	var found []string
	for rows.Next() {
		var msg string
		if err := rows.Scan(&msg); err != nil {
			rows.Close()
			return fmt.Errorf("check: %w", err)
		}
		found = append(found, msg)
	}
	err = rows.Err()
	rows.Close()
	if err != nil {
		if isCorrupt(err) {
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		return fmt.Errorf("check: %w", err)
	}
	if len(found) != 1 || found[0] != "ok" {
		return fmt.Errorf("%w: %s", ErrCorrupt, strings.Join(found, "; "))
	}
	if created {
		return nil
	}
	var n int
	if err := s.wconn.QueryRowContext(ctx,
		`SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'`).Scan(&n); err != nil {
		return fmt.Errorf("check schema: %w", err)
	}
	if n == 0 {
		return ErrNoSchema
	}
	return nil
}

// sqliteCode returns the primary result code of an SQLite error, or 0.
func sqliteCode(err error) int {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code() & 0xff
	}
	return 0
}

func isCorrupt(err error) bool {
	c := sqliteCode(err)
	return c == sqlite3.SQLITE_CORRUPT || c == sqlite3.SQLITE_NOTADB
}

// isFull reports whether err says the disk is full.
func isFull(err error) bool {
	return sqliteCode(err) == sqlite3.SQLITE_FULL || errors.Is(err, errand.ErrStorageFull)
}

// storageFull is the error of a write that failed for want of space.
func storageFull(err error) error {
	return fmt.Errorf("%w: %v", errand.Errorf(errand.CodeStorageFull, "the disk of the sqlite database is full"), err)
}

// checkpointLoop checkpoints the WAL every interval and truncates it,
// until Close. A checkpoint that readers hold up gives way at once and is
// tried again at the next tick: it must never stall the writer for long.
func (s *Driver) checkpointLoop(walPath string, every time.Duration) {
	defer close(s.checkpointed)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		if fi, err := os.Stat(walPath); err != nil || fi.Size() == 0 {
			continue
		}
		select {
		case <-s.stop:
			return
		case s.wsem <- struct{}{}:
		}
		s.checkpoint()
		<-s.wsem
	}
}

// checkpoint runs a TRUNCATE checkpoint on the writer; the caller holds
// wsem.
func (s *Driver) checkpoint() {
	ctx := s.ctl.ctx
	if _, err := s.wconn.ExecContext(ctx, `PRAGMA busy_timeout(50)`); err != nil {
		return
	}
	defer func() { _, _ = s.wconn.ExecContext(ctx, `PRAGMA busy_timeout(10000)`) }()
	var busy, logPages, done int
	_ = s.wconn.QueryRowContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &logPages, &done)
}

// migrate applies the embedded migrations in name order, each once, in
// its own transaction, and records them in schema_migrations.
func (s *Driver) migrate(ctx context.Context) error {
	if _, err := s.wconn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		name TEXT PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)`); err != nil {
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
		if err := s.wconn.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE name = ?`, base).Scan(&n); err != nil {
			return fmt.Errorf("check migration %s: %w", base, err)
		}
		if n > 0 {
			continue
		}
		body, err := migrations.ReadFile(name)
		if err != nil {
			return fmt.Errorf("read migration %s: %w", base, err)
		}
		err = s.write(ctx, func(w *wtx) error {
			w.wrote = true
			if _, err := s.wconn.ExecContext(w.ctx, string(body)); err != nil {
				return err
			}
			_, err := w.exec(`INSERT INTO schema_migrations (name) VALUES (?)`, base)
			return err
		})
		if err != nil {
			return fmt.Errorf("apply migration %s: %w", base, err)
		}
	}
	return nil
}

// Ping checks that both pools answer, and while the disk is full that a
// write gets through again (errand.ErrStorageFull until it does).
func (s *Driver) Ping(ctx context.Context) error {
	if err := s.rdb.PingContext(ctx); err != nil {
		return fmt.Errorf("ping sqlite: %w", err)
	}
	var one int
	if err := s.rdb.QueryRowContext(ctx, `SELECT 1`).Scan(&one); err != nil {
		return fmt.Errorf("ping sqlite: %w", err)
	}
	if s.full.Load() {
		// A write of a few pages, not a byte: a disk with room for a
		// heartbeat but not for a task is still full.
		err := s.write(ctx, func(w *wtx) error {
			w.wrote = true
			_, err := w.exec(`INSERT INTO store_probe (id, at, pad) VALUES (1, ?, zeroblob(?))
				ON CONFLICT (id) DO UPDATE SET at = excluded.at, pad = excluded.pad`, time.Now().UnixNano(), probeBytes)
			return err
		})
		if err != nil {
			return fmt.Errorf("ping sqlite: write: %w", err)
		}
		s.full.Store(false)
	}
	return nil
}

// Close waits for the write in progress, fails writes still waiting with
// errand.ErrUnavailable and closes both pools. Changes are no longer
// delivered.
func (s *Driver) Close() error {
	s.closeOnce.Do(func() {
		// Refuse new writes, fail those still waiting, then wait for the
		// batch in progress to end.
		s.pendMu.Lock()
		s.closed = true
		waiting := s.pending
		s.pending = nil
		s.pendMu.Unlock()
		for _, r := range waiting {
			if r.state.CompareAndSwap(reqWaiting, reqTaken) {
				r.err = errand.Errorf(errand.CodeUnavailable, "store closed")
				close(r.done)
			}
		}
		s.wsem <- struct{}{}
		if s.stop != nil {
			close(s.stop)
			<-s.wsem
			<-s.checkpointed
			s.wsem <- struct{}{}
		}
		var errs []error
		for _, st := range s.stmts {
			errs = append(errs, st.Close())
		}
		if s.wconn != nil {
			errs = append(errs, s.wconn.Close())
		}
		errs = append(errs, s.wdb.Close())
		if s.rdb != nil {
			errs = append(errs, s.rdb.Close())
		}
		s.subs.Clear()
		if err := errors.Join(errs...); err != nil {
			s.closeErr = fmt.Errorf("close sqlite: %w", err)
		}
	})
	return s.closeErr
}

// Subscribe calls fn after each committed change.
func (s *Driver) Subscribe(fn func(store.Change)) (unsubscribe func()) {
	return s.subs.Add(fn)
}

// wtx is a write transaction in progress on the writer connection.
type wtx struct {
	s       *Driver
	ctx     context.Context
	changes []store.Change
	// wrote is set once the write has run a statement that may change
	// rows: its failure then needs a rollback.
	wrote bool
}

func (w *wtx) stmt(query string) (*sql.Stmt, error) {
	if st, ok := w.s.stmts[query]; ok {
		return st, nil
	}
	st, err := w.s.wconn.PrepareContext(w.ctx, query)
	if err != nil {
		return nil, fmt.Errorf("prepare: %w", err)
	}
	w.s.stmts[query] = st
	return st, nil
}

func (w *wtx) exec(query string, args ...any) (sql.Result, error) {
	w.wrote = true
	st, err := w.stmt(query)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(w.ctx, args...)
}

func (w *wtx) query(query string, args ...any) (*sql.Rows, error) {
	st, err := w.stmt(query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(w.ctx, args...)
}

func (w *wtx) queryRow(query string, args ...any) *sql.Row {
	st, err := w.stmt(query)
	if err != nil {
		// A Row cannot carry an error of ours; the unprepared query
		// reports the same failure when run.
		return w.s.wconn.QueryRowContext(w.ctx, query, args...)
	}
	return st.QueryRowContext(w.ctx, args...)
}

func (w *wtx) emit(c store.Change) { w.changes = append(w.changes, c) }

// writeReq is one caller's write transaction waiting for the writer.
type writeReq struct {
	w     *wtx
	fn    func(*wtx) error
	state atomic.Int32 // reqWaiting, reqTaken or reqAbandoned
	err   error
	done  chan struct{}
}

const (
	reqWaiting int32 = iota
	reqTaken
	reqAbandoned
)

// maxBatch bounds how many callers' writes share one commit.
const maxBatch = 64

// write runs fn atomically on the writer connection and delivers the
// changes it emitted once they are committed.
//
// Writes are group-committed: whoever holds the writer runs every write
// queued at that moment in one transaction, each inside its own savepoint
// so that one failing write rolls back alone. Commits, and their WAL
// writes, are shared by concurrent callers; each caller still returns
// only after its own changes are durable. Waiting honours ctx; once taken,
// a write runs to its end so that a cancelled request never leaves the
// connection mid-transaction.
func (s *Driver) write(ctx context.Context, fn func(*wtx) error) error {
	req := &writeReq{w: &wtx{s: s, ctx: context.WithoutCancel(ctx)}, fn: fn, done: make(chan struct{})}
	s.pendMu.Lock()
	if s.closed {
		s.pendMu.Unlock()
		return errand.Errorf(errand.CodeUnavailable, "store closed")
	}
	s.pending = append(s.pending, req)
	s.pendMu.Unlock()
	for {
		select {
		case <-req.done:
			return req.err
		case s.wsem <- struct{}{}:
			// Let callers that are about to queue a write do so first:
			// one commit for more of them costs less than one each.
			runtime.Gosched()
			batch := s.takeBatch()
			if len(batch) > 0 {
				s.runBatch(batch)
			}
			<-s.wsem
			// Waking callers and delivering changes need not hold up
			// the next batch.
			s.complete(batch)
		case <-ctx.Done():
			if req.state.CompareAndSwap(reqWaiting, reqAbandoned) {
				return fmt.Errorf("wait for sqlite writer: %w", ctx.Err())
			}
			<-req.done
			return req.err
		}
	}
}

// takeBatch removes up to maxBatch waiting writes from the queue.
func (s *Driver) takeBatch() []*writeReq {
	s.pendMu.Lock()
	defer s.pendMu.Unlock()
	n := min(len(s.pending), maxBatch)
	batch := make([]*writeReq, 0, n)
	for _, r := range s.pending[:n] {
		if r.state.CompareAndSwap(reqWaiting, reqTaken) {
			batch = append(batch, r)
		}
	}
	s.pending = s.pending[n:]
	if len(s.pending) == 0 {
		s.pending = nil
	}
	return batch
}

// complete delivers the changes of the writes that committed and wakes
// their callers.
func (s *Driver) complete(batch []*writeReq) {
	for _, r := range batch {
		if r.err == nil {
			s.subs.Deliver(r.w.changes)
		} else if isFull(r.err) {
			s.full.Store(true)
			if !errors.Is(r.err, errand.ErrStorageFull) {
				r.err = storageFull(r.err)
			}
		}
	}
	for _, r := range batch {
		close(r.done)
	}
}

// runBatch runs writes in one transaction and sets each one's error. The
// caller holds wsem.
//
// Most failures are found before a write changes anything (a stale lease,
// an unknown id), and such a write simply drops out of the batch. When a
// write fails after changing rows, the whole transaction is rolled back
// and each write of the batch runs again in a transaction of its own, so
// that one failure never costs the others their changes.
func (s *Driver) runBatch(batch []*writeReq) {
	fail := func(err error) {
		for _, r := range batch {
			if r.err == nil {
				r.err = err
			}
		}
	}
	if _, err := s.ctl.exec(`BEGIN IMMEDIATE`); err != nil {
		fail(fmt.Errorf("begin: %w", err))
		return
	}
	for _, r := range batch {
		r.w.changes, r.w.wrote = nil, false
		if r.err = r.run(); r.err == nil || !r.w.wrote {
			continue
		}
		if _, err := s.ctl.exec(`ROLLBACK`); err != nil {
			fail(fmt.Errorf("rollback: %w", err))
			return
		}
		if len(batch) > 1 {
			for _, one := range batch {
				s.runBatch([]*writeReq{one})
			}
		}
		return
	}
	if _, err := s.ctl.exec(`COMMIT`); err != nil {
		_, _ = s.ctl.exec(`ROLLBACK`)
		fail(fmt.Errorf("commit: %w", err))
	}
}

// run calls the write's function; a panic becomes its error so that the
// writer is never left inside a transaction.
func (r *writeReq) run() (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("sqlite write panicked: %v", p)
		}
	}()
	return r.fn(r.w)
}

// nextVersion returns a task row version never used before.
func (s *Driver) nextVersion() int64 {
	s.version++
	return s.version
}

// maxActive bounds the cache of active task rows; past it the cache starts
// over, which costs reads, never correctness.
const maxActive = 1 << 16

// activeCache holds the rows of tasks that delegates hold, as last written,
// so that their reports need not read them again. An entry is a hint: it
// is used only through writes conditional on its version.
type activeCache struct {
	rows map[string]*taskRow
}

func (c *activeCache) get(id string) (*taskRow, bool) {
	r, ok := c.rows[id]
	return r, ok
}

func (c *activeCache) put(r *taskRow) {
	if len(c.rows) >= maxActive {
		clear(c.rows)
	}
	c.rows[r.ID] = r
}

func (c *activeCache) drop(id string) { delete(c.rows, id) }

// tokens hands out lease tokens from a buffer of random bytes, refilled
// from crypto/rand a page at a time. Used only by the writer.
type tokens struct {
	buf [4096]byte
	off int
}

// next returns 128 random bits in hex.
func (t *tokens) next() (string, error) {
	if t.off == 0 || t.off+16 > len(t.buf) {
		if _, err := rand.Read(t.buf[:]); err != nil {
			return "", fmt.Errorf("lease token: %w", err)
		}
		t.off = 0
	}
	tok := hex.EncodeToString(t.buf[t.off : t.off+16])
	clear(t.buf[t.off : t.off+16])
	t.off += 16
	return tok, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// notFound is the error of a missing row.
func notFound(what, id string) error {
	return errand.Errorf(errand.CodeNotFound, "%s %s not found", what, id)
}
