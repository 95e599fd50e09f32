package manager

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/errandci/errand/manager/store"
)

// sealReadLimit is how many lines the sealer reads from the store at once.
const sealReadLimit = 10000

func (s *Server) runSealer(ctx context.Context) {
	t := time.NewTicker(s.cfg.SealInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.sealWake:
		}
		if _, err := s.sealPass(ctx); err != nil && ctx.Err() == nil {
			s.log.WithError(err).Warn("sealing logs failed; retrying later")
		}
	}
}

// sealPass seals the logs of ended tasks until none is left, and returns
// how many it sealed.
func (s *Server) sealPass(ctx context.Context) (int, error) {
	total := 0
	for {
		ids, err := s.store.LogSealList(ctx, sealBatch)
		if err != nil {
			return total, fmt.Errorf("list logs to seal: %w", err)
		}
		for _, id := range ids {
			if err := s.sealLog(ctx, id); err != nil {
				return total, err
			}
			total++
		}
		if len(ids) < sealBatch {
			return total, nil
		}
	}
}

// sealLog writes an ended task's log into objects of at most
// LogObjectSize bytes (a single longer line gets an object of its own),
// then records them in the store, which drops the lines. A pass that
// fails halfway leaves the store as it was; the next pass writes the same
// keys again.
func (s *Server) sealLog(ctx context.Context, taskID string) error {
	var (
		objects []store.LogObject
		buf     bytes.Buffer
		first   int64
		count   int64
		offset  int64
	)
	put := func() error {
		o := store.LogObject{Key: logKey(taskID, len(objects)), FirstLine: first, Lines: count, Size: int64(buf.Len())}
		if err := s.objects.Put(ctx, o.Key, bytes.NewReader(buf.Bytes()), o.Size); err != nil {
			return fmt.Errorf("seal log of task %s: %w", taskID, err)
		}
		objects = append(objects, o)
		buf.Reset()
		first += count
		count = 0
		return nil
	}
	for {
		lines, err := s.store.LogRead(ctx, store.LogReadParams{TaskID: taskID, Offset: offset, Limit: sealReadLimit})
		if err != nil {
			return fmt.Errorf("seal log of task %s: %w", taskID, err)
		}
		for _, l := range lines {
			if count > 0 && int64(buf.Len()+len(l)+1) > s.cfg.LogObjectSize {
				if err := put(); err != nil {
					return err
				}
			}
			buf.WriteString(l)
			buf.WriteByte('\n')
			count++
		}
		offset += int64(len(lines))
		if len(lines) < sealReadLimit {
			break
		}
	}
	if count > 0 {
		if err := put(); err != nil {
			return err
		}
	}
	if err := s.store.LogSeal(ctx, store.LogSealParams{TaskID: taskID, Objects: objects}); err != nil {
		return fmt.Errorf("seal log of task %s: %w", taskID, err)
	}
	s.log.WithFields(logrus.Fields{"task_id": taskID, "lines": offset, "objects": len(objects)}).Debug("log sealed")
	return nil
}
