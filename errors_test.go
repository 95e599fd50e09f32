package errand

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
)

func TestRetryable(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"refused connection", refused, true},
		{"broken answer", fmt.Errorf("read response: %w", io.ErrUnexpectedEOF), true},
		{"attempt timed out", fmt.Errorf("post: %w", context.DeadlineExceeded), true},
		{"caller cancelled", fmt.Errorf("post: %w", context.Canceled), false},
		{"unavailable", Errorf(CodeUnavailable, "shutting down"), true},
		{"internal", Errorf(CodeInternal, "oops"), true},
		{"storage full", ErrStorageFull, true},
		{"wrapped unavailable", fmt.Errorf("report: %w", ErrUnavailable), true},
		{"lease lost", fmt.Errorf("report: %w", ErrLeaseLost), false},
		{"invalid", ErrInvalid, false},
		{"unauthorized", ErrUnauthorized, false},
		{"forbidden", ErrForbidden, false},
		{"not found", ErrNotFound, false},
		{"conflict", ErrConflict, false},
		{"illegal transition", ErrIllegalTransition, false},
		{"log offset", ErrLogOffset, false},
		{"too large", ErrTooLarge, false},
		{"answer joined with a transport error", errors.Join(refused, ErrLeaseLost), false},
	}
	for _, tc := range cases {
		if got := Retryable(tc.err); got != tc.want {
			t.Errorf("%s: Retryable(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}
