package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

// maxPayload keeps a NOTIFY payload under PostgreSQL's limit of 8000
// bytes, with room for the origin.
const maxPayload = 7000

// wireChange is a store.Change in a NOTIFY payload, with short keys.
type wireChange struct {
	Kind       store.ChangeKind `json:"k"`
	TaskID     string           `json:"t,omitempty"`
	TaskType   string           `json:"y,omitempty"`
	DelegateID string           `json:"d,omitempty"`
	LogLines   int64            `json:"l,omitempty"`
	TaskState  errand.State     `json:"s,omitempty"`
	Count      int              `json:"n,omitempty"`
	Remote     bool             `json:"-"`
	Ended      *errand.Task     `json:"-"`
}

// encodePayloads packs changes into NOTIFY payloads of the form
// "origin\n[changes]", each under maxPayload bytes.
func encodePayloads(origin string, changes []store.Change) ([]string, error) {
	var (
		out []string
		b   strings.Builder
	)
	start := func() {
		b.Reset()
		b.WriteString(origin)
		b.WriteString("\n[")
	}
	start()
	n := 0
	for _, c := range changes {
		j, err := json.Marshal(wireChange(c))
		if err != nil {
			return nil, fmt.Errorf("encode change: %w", err)
		}
		if n > 0 && b.Len()+len(j)+2 > maxPayload {
			b.WriteByte(']')
			out = append(out, b.String())
			start()
			n = 0
		}
		if n > 0 {
			b.WriteByte(',')
		}
		b.Write(j)
		n++
	}
	if n > 0 {
		b.WriteByte(']')
		out = append(out, b.String())
	}
	return out, nil
}

// decodePayload reads a payload made by encodePayloads.
func decodePayload(p string) (origin string, changes []store.Change, err error) {
	origin, body, ok := strings.Cut(p, "\n")
	if !ok {
		return "", nil, fmt.Errorf("notification without origin")
	}
	var wire []wireChange
	if err := json.Unmarshal([]byte(body), &wire); err != nil {
		return "", nil, fmt.Errorf("decode notification: %w", err)
	}
	changes = make([]store.Change, len(wire))
	for i, w := range wire {
		changes[i] = store.Change(w)
		changes[i].Remote = true
	}
	return origin, changes, nil
}

// notifier sends this manager's committed changes to the other managers.
//
// NOTIFY takes a database-wide lock at commit, so sending one per write
// transaction would serialise every commit of the hot path behind it.
// Instead, writes hand their changes to the notifier after they commit,
// and the notifier sends whatever has gathered in one statement as soon as
// the previous one is done: no delay when idle, fewer and larger
// notifications under load. Log appends to the same task coalesce into the
// latest.
type notifier struct {
	s *Driver

	mu      sync.Mutex
	pending []store.Change
	logAt   map[string]int // task id → index of its log change in pending

	// turn is held by whoever is sending notifications: a transaction
	// carrying them (board) or the notifier itself. A transaction that
	// notifies holds a database-wide lock while it commits, so that
	// notifying transactions commit one after the other: one at a time
	// keeps the others' commits together.
	turn chan struct{}

	wake   chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

func newNotifier(s *Driver) *notifier {
	ctx, cancel := context.WithCancel(context.Background())
	n := &notifier{s: s, logAt: map[string]int{}, turn: make(chan struct{}, 1), wake: make(chan struct{}, 1),
		ctx: ctx, cancel: cancel, done: make(chan struct{})}
	go n.run()
	return n
}

// add queues changes for the other managers. It never blocks on the
// database.
func (n *notifier) add(changes []store.Change) {
	if len(changes) == 0 {
		return
	}
	n.mu.Lock()
	for _, c := range changes {
		if c.Kind == store.ChangeLogAppended {
			if i, ok := n.logAt[c.TaskID]; ok {
				if c.LogLines > n.pending[i].LogLines {
					n.pending[i] = c
				}
				continue
			}
			n.logAt[c.TaskID] = len(n.pending)
		}
		n.pending = append(n.pending, c)
	}
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

func (n *notifier) take() []store.Change {
	n.mu.Lock()
	defer n.mu.Unlock()
	p := n.pending
	n.pending = nil
	clear(n.logAt)
	return p
}

func (n *notifier) run() {
	defer close(n.done)
	for {
		select {
		case <-n.ctx.Done():
			// Send what is left, briefly: the other managers would
			// otherwise learn of it only when their waits end.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			n.send(ctx, n.take())
			cancel()
			return
		case <-n.wake:
			// Give a transaction about to commit the chance to carry
			// what is waiting (board): a notification sent on its own
			// is a commit of its own.
			t := time.NewTimer(notifyLinger)
			select {
			case <-n.ctx.Done():
				t.Stop()
				continue
			case <-t.C:
			}
			select {
			case <-n.ctx.Done():
				continue
			case n.turn <- struct{}{}:
			}
			n.send(n.ctx, n.take())
			<-n.turn
		}
	}
}

// notifyLinger is how long the notifier leaves waiting changes to the
// next committing transaction before it sends them itself.
const notifyLinger = 2 * time.Millisecond

// board has a transaction about to commit carry the waiting changes and
// its own, so that they cost no commit of their own and reach the other
// managers when it commits. It returns ok false, having done nothing,
// when another send holds the turn or nothing is to be sent. When ok, the
// caller calls landed once the transaction ended.
func (n *notifier) board(ctx context.Context, tx pgx.Tx, own []store.Change) (taken []store.Change, ok bool, err error) {
	select {
	case n.turn <- struct{}{}:
	default:
		return nil, false, nil
	}
	taken = n.take()
	all := append(append([]store.Change(nil), taken...), own...)
	payloads, err := encodePayloads(n.s.origin, all)
	if err != nil || len(payloads) == 0 {
		n.landed(taken, false)
		return nil, false, nil
	}
	b := &pgx.Batch{}
	for _, p := range payloads {
		b.Queue(`SELECT pg_notify($1, $2)`, n.s.channel, p)
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return taken, true, fmt.Errorf("notify: %w", err)
	}
	return taken, true, nil
}

// landed ends a board: the changes it took are queued again when the
// transaction that carried them did not commit.
func (n *notifier) landed(taken []store.Change, committed bool) {
	<-n.turn
	if !committed {
		n.add(taken)
	}
}

// send notifies the changes in as few payloads as fit, in one round trip.
func (n *notifier) send(ctx context.Context, changes []store.Change) {
	if len(changes) == 0 {
		return
	}
	payloads, err := encodePayloads(n.s.origin, changes)
	if err != nil {
		n.s.log.WithError(err).Warn("postgres: cannot encode changes for other managers")
		return
	}
	b := &pgx.Batch{}
	for _, p := range payloads {
		b.Queue(`SELECT pg_notify($1, $2)`, n.s.channel, p)
	}
	if err := n.s.pool.SendBatch(ctx, b).Close(); err != nil && ctx.Err() == nil {
		n.s.log.WithError(err).WithField("changes", len(changes)).
			Warn("postgres: notifying other managers failed; their waiters learn at their next poll")
	}
}

func (n *notifier) stop() {
	n.cancel()
	<-n.done
}

// listener delivers the changes other managers notify to this manager's
// subscribers, on a connection of its own that it re-establishes with
// backoff when it breaks.
type listener struct {
	s      *Driver
	cfg    *pgx.ConnConfig
	cancel context.CancelFunc
	done   chan struct{}
}

// startListener connects and LISTENs before returning, so that a store
// that opened hears every change committed after Open.
func startListener(ctx context.Context, s *Driver, cfg *pgx.ConnConfig) (*listener, error) {
	l := &listener{s: s, cfg: cfg, done: make(chan struct{})}
	conn, err := l.connect(ctx)
	if err != nil {
		return nil, fmt.Errorf("listen for changes: %w", err)
	}
	lctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	go l.run(lctx, conn)
	return l, nil
}

func (l *listener) connect(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, l.cfg)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, `LISTEN `+pgx.Identifier{l.s.channel}.Sanitize()); err != nil {
		_ = conn.Close(ctx)
		return nil, err
	}
	return conn, nil
}

func (l *listener) run(ctx context.Context, conn *pgx.Conn) {
	defer close(l.done)
	defer func() {
		if conn != nil {
			closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = conn.Close(closeCtx)
			cancel()
		}
	}()
	for {
		n, err := conn.WaitForNotification(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			l.s.log.WithError(err).Warn("postgres: listener connection lost; reconnecting")
			closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = conn.Close(closeCtx)
			cancel()
			conn = nil
			if conn = l.reconnect(ctx); conn == nil {
				return
			}
			l.catchUp(ctx)
			continue
		}
		origin, changes, err := decodePayload(n.Payload)
		if err != nil {
			l.s.log.WithError(err).Warn("postgres: ignoring a malformed notification")
			continue
		}
		if origin == l.s.origin {
			continue
		}
		l.s.subs.Deliver(changes)
	}
}

// reconnect tries until it connects or ctx ends (nil then).
func (l *listener) reconnect(ctx context.Context) *pgx.Conn {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 50 * time.Millisecond
	b.MaxInterval = 5 * time.Second
	b.MaxElapsedTime = 0
	conn, err := backoff.RetryWithData(func() (*pgx.Conn, error) {
		c, err := l.connect(ctx)
		if err != nil && ctx.Err() == nil {
			l.s.log.WithError(err).Debug("postgres: listener reconnect failed")
		}
		return c, err
	}, backoff.WithContext(b, ctx))
	if err != nil {
		return nil
	}
	l.s.log.Info("postgres: listener reconnected")
	return conn
}

// catchUp stands in for the notifications missed while disconnected: it
// wakes the acquirers of every type still queued.
func (l *listener) catchUp(ctx context.Context) {
	rows, err := l.s.pool.Query(ctx, `SELECT DISTINCT type FROM tasks WHERE state = 'queued'`)
	if err != nil {
		return
	}
	types, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return
	}
	changes := make([]store.Change, len(types))
	for i, t := range types {
		changes[i] = store.Change{Kind: store.ChangeTaskQueued, TaskType: t, Remote: true}
	}
	l.s.subs.Deliver(changes)
}

func (l *listener) stop() {
	l.cancel()
	<-l.done
}
