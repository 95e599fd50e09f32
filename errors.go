package errand

import (
	"context"
	"errors"
	"fmt"
)

// Error codes: the one list shared by the manager, the client and the
// delegate side. httphelper maps each to its HTTP status; the client
// rebuilds an *Error from a response so that errors.Is works across the
// wire.
const (
	// API errors.
	CodeInvalid           = "invalid"            // 400: malformed or invalid input
	CodeUnauthorized      = "unauthorized"       // 401: no or bad token
	CodeForbidden         = "forbidden"          // 403: token of the wrong principal
	CodeNotFound          = "not_found"          // 404
	CodeMethodNotAllowed  = "method_not_allowed" // 405
	CodeConflict          = "conflict"           // 409: e.g. an id that exists
	CodeLeaseLost         = "lease_lost"         // 409: stale or foreign lease
	CodeIllegalTransition = "illegal_transition" // 409
	CodeLogOffset         = "log_offset"         // 409: a log append that leaves a gap
	CodeTooLarge          = "too_large"          // 413
	CodeUnavailable       = "unavailable"        // 503: shutting down, store down
	CodeStorageFull       = "storage_full"       // 507: the store's disk is full, nothing can be written
	CodeInternal          = "internal"           // 500

	// Task outcome codes, found in a task's error.
	CodeDelegateLost    = "delegate_lost"     // the delegate stopped heartbeating, no attempts left
	CodeAffinityLost    = "affinity_lost"     // the delegate the task must follow is gone, and no live one may stand in
	CodeTimedOut        = "timed_out"         // the task ran past its timeout
	CodeCancelled       = "cancelled"         // a user cancelled it
	CodeDependencyUnmet = "dependency_unmet"  // skipped: a dependency's condition did not hold
	CodeUnknownTaskType = "unknown_task_type" // no handler for the type
	CodeHandlerPanic    = "handler_panic"     // the handler panicked
	CodeBadResult       = "bad_result"        // the handler's response was not JSON
	CodeTaskFailed      = "task_failed"       // generic failure reported by a handler
	CodeExitCode        = "exit_code"         // a step exited non-zero
	// CodeDockerUnavailable: the Docker daemon does not answer. Like every
	// outcome code a handler answers it with 422.
	CodeDockerUnavailable = "docker_unavailable"
)

// Error is a structured error: a machine-readable code and a reason for
// people. It travels as {"code":…,"reason":…}.
type Error struct {
	Code   string `json:"code"`
	Reason string `json:"reason"`
}

// Errorf returns an *Error with the code and a formatted reason.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Reason: fmt.Sprintf(format, args...)}
}

// Error implements error.
func (e *Error) Error() string {
	if e.Reason == "" {
		return e.Code
	}
	return e.Code + ": " + e.Reason
}

// Is makes errors.Is(err, ErrLeaseLost) true for any *Error with the same
// code, whatever its reason.
func (e *Error) Is(target error) bool {
	var t *Error
	if errors.As(target, &t) {
		return t.Code == e.Code
	}
	return false
}

// Sentinel errors, one per code that callers branch on. Compare with
// errors.Is; the reason of the error returned will say more.
var (
	ErrInvalid           = &Error{Code: CodeInvalid}
	ErrUnauthorized      = &Error{Code: CodeUnauthorized}
	ErrForbidden         = &Error{Code: CodeForbidden}
	ErrNotFound          = &Error{Code: CodeNotFound}
	ErrConflict          = &Error{Code: CodeConflict}
	ErrLeaseLost         = &Error{Code: CodeLeaseLost}
	ErrIllegalTransition = &Error{Code: CodeIllegalTransition}
	ErrLogOffset         = &Error{Code: CodeLogOffset}
	ErrTooLarge          = &Error{Code: CodeTooLarge}
	ErrUnavailable       = &Error{Code: CodeUnavailable}
	ErrStorageFull       = &Error{Code: CodeStorageFull}
)

// ErrorCode returns the code of the first *Error in err's chain, or
// CodeInternal.
func ErrorCode(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// Retryable reports whether a call that failed with err may succeed if it
// is made again unchanged: the manager was not reached or its answer was
// lost (a refused or broken connection, an attempt that ran out of time),
// or it answered that it cannot serve now (unavailable, internal,
// storage_full). Every other answer is about the request itself (invalid,
// unauthorized, lease_lost, …) and stays the same however often it is
// sent; so does the end of the caller's own context (context.Canceled).
//
// Retryable says whether a failure is passing, not whether the call is
// safe to repeat: only the caller knows that (a report applied once is, a
// registration is not), and it retries only such calls.
func Retryable(err error) bool {
	if err == nil {
		return false
	}
	var e *Error
	if errors.As(err, &e) {
		switch e.Code {
		case CodeUnavailable, CodeInternal, CodeStorageFull:
			return true
		}
		return false
	}
	return !errors.Is(err, context.Canceled)
}
