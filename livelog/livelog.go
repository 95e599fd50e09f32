// Package livelog ships a task's output to the manager while the task
// runs: it splits what is written into lines, masks secret values, batches
// lines by count, size and time, and appends each batch at its offset under
// the task's lease, retrying idempotently with backoff.
package livelog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/cenkalti/backoff/v4"
	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/internal/clock"
)

// Mask is what replaces every occurrence of a secret.
const Mask = "******"

// Defaults of a Config.
const (
	DefaultBatchLines   = 200
	DefaultBatchBytes   = 256 << 10
	DefaultInterval     = 200 * time.Millisecond
	DefaultMaxBuffered  = 10000
	DefaultMaxLineBytes = 64 << 10
)

// Appender is the part of client.DelegateClient a Writer needs.
type Appender interface {
	AppendLogs(ctx context.Context, taskID string, a *client.LogAppend) (*client.LogAppendResult, error)
}

// Config configures a Writer. Zero values take the defaults.
type Config struct {
	TaskID string
	Lease  string
	// Offset is the number of lines the task's log already holds.
	Offset int64
	// Secrets are masked in every line.
	Secrets []string
	// BatchLines, BatchBytes and Interval decide when a batch is sent:
	// when it holds that many lines or bytes, or when its oldest line has
	// waited that long.
	BatchLines int
	BatchBytes int
	Interval   time.Duration
	// MaxBuffered bounds the lines held while the manager is slow or
	// unreachable; lines beyond it are dropped and counted, and a line
	// saying how many is shipped in their place.
	MaxBuffered int
	// MaxLineBytes splits longer lines.
	MaxLineBytes int
	// OnLeaseLost is called once when the manager refuses the lease: the
	// task belongs to someone else now and should stop.
	OnLeaseLost func()
	// NewBackOff returns the retry policy of one batch; exponential with
	// jitter when nil.
	NewBackOff func() backoff.BackOff
	// Clock times the batches and the retry waits; the system's when
	// nil.
	Clock clock.Clock
	Log   logrus.FieldLogger
}

// ErrClosed is returned by Write after Close.
var ErrClosed = errors.New("livelog: writer closed")

// Writer is a task's log. It is safe for concurrent use; Close must be
// called to ship the last lines and stop its goroutine.
type Writer struct {
	a   Appender
	cfg Config
	log logrus.FieldLogger

	mu        sync.Mutex
	secrets   []string // every value given to Mask
	masker    *Masker
	partial   []byte // the raw bytes of the current line not yet queued
	covered   int    // how many leading bytes of partial are a secret's end
	queue     []string
	queuedB   int
	dropped   int
	offset    int64
	closed    bool
	leaseLost bool
	firstAt   time.Time

	notify chan struct{}
	stop   context.CancelFunc
	done   chan struct{}
}

// New starts a Writer whose shipping is bounded by ctx.
func New(ctx context.Context, a Appender, cfg Config) *Writer {
	if cfg.BatchLines <= 0 {
		cfg.BatchLines = DefaultBatchLines
	}
	if cfg.BatchBytes <= 0 {
		cfg.BatchBytes = DefaultBatchBytes
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.MaxBuffered <= 0 {
		cfg.MaxBuffered = DefaultMaxBuffered
	}
	if cfg.MaxLineBytes <= 0 {
		cfg.MaxLineBytes = DefaultMaxLineBytes
	}
	if cfg.NewBackOff == nil {
		cfg.NewBackOff = func() backoff.BackOff {
			b := backoff.NewExponentialBackOff()
			b.InitialInterval = 100 * time.Millisecond
			b.MaxInterval = 5 * time.Second
			b.MaxElapsedTime = 0
			return b
		}
	}
	log := cfg.Log
	if log == nil {
		log = logrus.StandardLogger()
	}
	cfg.Clock = clock.OrReal(cfg.Clock)
	ctx, stop := context.WithCancel(ctx)
	w := &Writer{
		a: a, cfg: cfg, log: log.WithField("task_id", cfg.TaskID),
		offset: cfg.Offset,
		notify: make(chan struct{}, 1),
		stop:   stop,
		done:   make(chan struct{}),
	}
	w.Mask(cfg.Secrets...)
	go w.ship(ctx)
	return w
}

// Mask adds secret values to hide from now on. Multi-line values are
// masked line by line, since the log is split into lines before masking.
// Values (or lines of them) shorter than MinSecretLen are not masked; a
// warning says how many.
func (w *Writer) Mask(values ...string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	short := 0
	for _, v := range values {
		_, n := SecretParts(v)
		short += n
	}
	if short > 0 {
		w.log.WithFields(logrus.Fields{"secrets": short, "min_bytes": MinSecretLen}).
			Warn("secret values shorter than the minimum length are not masked")
	}
	w.secrets = append(w.secrets, values...)
	w.masker, _ = NewMasker(w.secrets...)
}

// Write splits p into lines and queues them. It never blocks on the
// network, and holds at most about three times MaxLineBytes of a line
// that has no end yet: longer lines are queued in parts.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return 0, ErrClosed
	}
	if w.leaseLost {
		return len(p), nil
	}
	n := len(p)
	for len(p) > 0 {
		piece, rest, eol := bytes.Cut(p, []byte("\n"))
		for len(piece) > 0 {
			k := min(len(piece), w.cfg.MaxLineBytes)
			w.partial = append(w.partial, piece[:k]...)
			piece = piece[k:]
			w.splitLong(false)
		}
		if !eol {
			break
		}
		w.endLine(true)
		p = rest
	}
	return n, nil
}

// splitLong queues the start of a line longer than MaxLineBytes as lines
// of at most MaxLineBytes (counted before masking, which can make a line
// up to 1.5 times longer), cut before a UTF-8 character. Unless the line
// is complete, as many bytes as the longest secret but one are kept back
// after a cut, so that a secret cut short at the end of what has arrived
// is masked as a whole once the rest arrives. A cut falls before a secret
// rather than in it, unless the masked bytes alone are longer than a
// line: then both sides are masked. w.mu is held.
func (w *Writer) splitLong(final bool) {
	limit := w.cfg.MaxLineBytes
	keep := 0
	if !final {
		keep = min(max(w.masker.MaxLen()-1, 0), limit)
	}
	for len(w.partial) > limit && len(w.partial) >= limit+keep {
		cut := limit
		for k := 0; k < utf8.UTFMax && cut-k > 0; k++ {
			if utf8.RuneStart(w.partial[cut-k]) {
				cut -= k
				break
			}
		}
		s := string(w.partial)
		spans := w.masker.spans(s, w.covered)
		for _, sp := range spans {
			if sp.start > 0 && sp.start < cut && sp.end > cut {
				cut = sp.start // a secret goes to the next line whole
			}
		}
		var head []span
		covered := 0
		for _, sp := range spans {
			if sp.start >= cut {
				break
			}
			if sp.end > cut {
				covered = sp.end - cut
				sp.end = cut
			}
			head = append(head, sp)
		}
		w.queueLine(ValidUTF8(apply(s[:cut], head)))
		w.partial = append(w.partial[:0], w.partial[cut:]...)
		w.covered = covered
	}
}

// endLine masks and queues the current line; w.mu is held.
func (w *Writer) endLine(trimCR bool) {
	if trimCR {
		w.partial = bytes.TrimSuffix(w.partial, []byte("\r"))
	}
	w.splitLong(true)
	s := string(w.partial)
	w.queueLine(ValidUTF8(apply(s, w.masker.spans(s, w.covered))))
	w.partial = w.partial[:0]
	w.covered = 0
}

// queueLine queues a masked line; w.mu is held.
func (w *Writer) queueLine(line string) {
	if len(w.queue) >= w.cfg.MaxBuffered {
		w.dropped++
		return
	}
	if w.dropped > 0 {
		w.queue = append(w.queue, dropNote(w.dropped))
		w.dropped = 0
	}
	first := len(w.queue) == 0
	if first {
		w.firstAt = w.cfg.Clock.Now()
	}
	w.queue = append(w.queue, line)
	w.queuedB += len(line)
	// The first line starts the batch's clock; a full batch goes at once.
	if first || len(w.queue) >= w.cfg.BatchLines || w.queuedB >= w.cfg.BatchBytes {
		w.wake()
	}
}

func (w *Writer) wake() {
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

func dropNote(n int) string {
	return fmt.Sprintf("[errand: %d log lines dropped while the manager was unreachable]", n)
}

// Offset returns the number of lines the manager has stored.
func (w *Writer) Offset() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.offset
}

// LeaseLost reports whether the manager refused the task's lease.
func (w *Writer) LeaseLost() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.leaseLost
}

// Close ships what is left, the last unterminated line included, and
// stops. If ctx ends first, the lines not yet shipped are given up and an
// error says how many.
func (w *Writer) Close(ctx context.Context) error {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		if len(w.partial) > 0 && !w.leaseLost {
			w.endLine(false)
			w.partial = nil
		}
		if w.dropped > 0 && !w.leaseLost {
			w.queue = append(w.queue, dropNote(w.dropped))
			w.dropped = 0
		}
	}
	w.mu.Unlock()
	w.wake()
	select {
	case <-w.done:
	case <-ctx.Done():
		w.stop()
		<-w.done
	}
	w.stop()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.leaseLost {
		return fmt.Errorf("ship log of task %s: %w", w.cfg.TaskID, errand.ErrLeaseLost)
	}
	if n := len(w.queue) + w.dropped; n > 0 {
		return fmt.Errorf("ship log of task %s: %d lines not shipped: %w", w.cfg.TaskID, n, ctx.Err())
	}
	return nil
}

// ship is the Writer's goroutine: it sends batches until closed and
// drained, or until ctx ends.
func (w *Writer) ship(ctx context.Context) {
	defer close(w.done)
	for {
		w.mu.Lock()
		n, closed, lost := len(w.queue), w.closed, w.leaseLost
		waited := w.cfg.Clock.Now().Sub(w.firstAt)
		due := n > 0 && (closed || n >= w.cfg.BatchLines || w.queuedB >= w.cfg.BatchBytes || waited >= w.cfg.Interval)
		var wait time.Duration
		if n > 0 && !due {
			wait = w.cfg.Interval - waited
		}
		w.mu.Unlock()
		if lost || (closed && n == 0) {
			return
		}
		if due {
			if err := w.sendBatch(ctx); err != nil {
				return
			}
			continue
		}
		if n == 0 {
			wait = time.Hour
		}
		timer := w.cfg.Clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-w.notify:
			timer.Stop()
		case <-timer.C():
		}
	}
}

// sendBatch sends the oldest lines, retrying the same lines at the same
// offset so that a retry after a lost answer is idempotent. It returns an
// error only when shipping must stop.
func (w *Writer) sendBatch(ctx context.Context) error {
	w.mu.Lock()
	size, count := 0, 0
	for count < len(w.queue) && count < w.cfg.BatchLines && (count == 0 || size+len(w.queue[count]) <= w.cfg.BatchBytes) {
		size += len(w.queue[count])
		count++
	}
	batch := &client.LogAppend{Lease: w.cfg.Lease, Offset: w.offset, Lines: append([]string(nil), w.queue[:count]...)}
	w.mu.Unlock()

	var res *client.LogAppendResult
	retry := client.Retrier{NewBackOff: w.cfg.NewBackOff, Timer: func() backoff.Timer { return clock.BackOffTimer(w.cfg.Clock) }, Notify: func(err error, _ time.Duration) {
		w.log.WithError(err).WithField("offset", batch.Offset).Debug("log append failed; retrying")
	}}
	err := retry.Do(ctx, func() error {
		var err error
		res, err = w.a.AppendLogs(ctx, w.cfg.TaskID, batch)
		return err
	})

	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case err == nil:
		next := batch.Offset + int64(len(batch.Lines))
		if res != nil && res.Next > next {
			next = res.Next
		}
		w.offset = next
	case errors.Is(err, errand.ErrLeaseLost):
		w.leaseLost = true
		w.queue, w.queuedB, w.partial = nil, 0, nil
		w.log.Warn("manager refused the task's lease while shipping its log; stopping the task")
		if w.cfg.OnLeaseLost != nil {
			go w.cfg.OnLeaseLost()
		}
		return err
	case ctx.Err() != nil:
		return err
	default:
		w.log.WithError(err).WithFields(logrus.Fields{"offset": batch.Offset, "lines": len(batch.Lines)}).Warn("manager refused log lines; dropped")
	}
	w.queue = w.queue[count:]
	w.queuedB -= size
	if len(w.queue) > 0 {
		w.firstAt = w.cfg.Clock.Now().Add(-w.cfg.Interval) // the rest is already due
	} else {
		w.queue = nil
	}
	return nil
}
