// Package httphelper writes JSON responses and structured errors and
// decodes request bodies with a size limit, for the manager's API and for
// task handlers alike. Its table maps every errand error code to its HTTP
// status and back, so that an error keeps its identity across the wire.
package httphelper

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/errandci/errand"
)

// DefaultMaxBody is the body size DecodeJSON accepts when given 0.
const DefaultMaxBody = 1 << 20

// OperationIDHeader is the response header that names the request's
// operation id. WriteError puts the id it holds into the error's body.
const OperationIDHeader = "X-Operation-Id"

// ErrorLogger is implemented by a ResponseWriter that logs internal errors
// with what identifies its request (the manager logs them under the
// operation id). WriteJSON hands it the errors that no caller sees, such
// as a response that cannot be encoded.
type ErrorLogger interface {
	LogError(err error)
}

// statusOf is the one table from error code to HTTP status. Task outcome
// codes written by handlers are failures of the task, not of HTTP: they
// map to 422 so that a handler's response still says "failed".
var statusOf = map[string]int{
	errand.CodeInvalid:           http.StatusBadRequest,
	errand.CodeUnauthorized:      http.StatusUnauthorized,
	errand.CodeForbidden:         http.StatusForbidden,
	errand.CodeNotFound:          http.StatusNotFound,
	errand.CodeMethodNotAllowed:  http.StatusMethodNotAllowed,
	errand.CodeConflict:          http.StatusConflict,
	errand.CodeLeaseLost:         http.StatusConflict,
	errand.CodeIllegalTransition: http.StatusConflict,
	errand.CodeLogOffset:         http.StatusConflict,
	errand.CodeTooLarge:          http.StatusRequestEntityTooLarge,
	errand.CodeUnavailable:       http.StatusServiceUnavailable,
	errand.CodeStorageFull:       http.StatusInsufficientStorage,
	errand.CodeInternal:          http.StatusInternalServerError,
}

// Status returns the HTTP status for an error code: the table's, or 422
// for task outcome codes and any code the table does not know.
func Status(code string) int {
	if s, ok := statusOf[code]; ok {
		return s
	}
	return http.StatusUnprocessableEntity
}

// CodeForStatus returns the code to assume for a response with this status
// and no structured error body.
func CodeForStatus(status int) string {
	switch status {
	case http.StatusBadRequest:
		return errand.CodeInvalid
	case http.StatusUnauthorized:
		return errand.CodeUnauthorized
	case http.StatusForbidden:
		return errand.CodeForbidden
	case http.StatusNotFound:
		return errand.CodeNotFound
	case http.StatusMethodNotAllowed:
		return errand.CodeMethodNotAllowed
	case http.StatusConflict:
		return errand.CodeConflict
	case http.StatusRequestEntityTooLarge:
		return errand.CodeTooLarge
	case http.StatusInsufficientStorage:
		return errand.CodeStorageFull
	case http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout:
		return errand.CodeUnavailable
	case http.StatusUnprocessableEntity:
		return errand.CodeTaskFailed
	}
	return errand.CodeInternal
}

// ErrorBody is the JSON form of every error response.
type ErrorBody struct {
	Kind        string `json:"kind"`
	Code        string `json:"code"`
	Reason      string `json:"reason"`
	OperationID string `json:"operation_id,omitempty"`
}

// Err returns the *errand.Error the body describes.
func (b *ErrorBody) Err() *errand.Error { return &errand.Error{Code: b.Code, Reason: b.Reason} }

// WriteJSON writes v as JSON with the status.
func WriteJSON(w http.ResponseWriter, v any, status int) {
	b, err := json.Marshal(v)
	if err != nil {
		err = fmt.Errorf("encode response: %w", err)
		if l, ok := w.(ErrorLogger); ok {
			l.LogError(err)
		}
		WriteError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// WriteError writes err as a structured error with the status of its code,
// with the operation id the response's OperationIDHeader holds. An error
// that carries no *errand.Error is internal: its text is not shown, and
// the caller is expected to have logged it.
func WriteError(w http.ResponseWriter, err error) {
	WriteErrorOp(w, err, w.Header().Get(OperationIDHeader))
}

// WriteErrorOp is WriteError with an operation id to put in the body.
func WriteErrorOp(w http.ResponseWriter, err error, operationID string) {
	body := ErrorBody{Kind: errand.KindError, Code: errand.ErrorCode(err), OperationID: operationID}
	if body.Code == errand.CodeInternal {
		body.Reason = "internal error"
		if operationID != "" {
			body.Reason += "; the manager's log has details under operation_id " + operationID
		}
	} else {
		body.Reason = Reason(err)
	}
	b, _ := json.Marshal(body)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(Status(body.Code))
	_, _ = w.Write(append(b, '\n'))
}

// Reason returns the message of err without the leading "code: " that an
// *errand.Error puts in front of it.
func Reason(err error) string {
	msg := err.Error()
	code := errand.ErrorCode(err)
	// A wrapped sentinel reads "context: code" or "code: context".
	msg = strings.TrimPrefix(msg, code+": ")
	msg = strings.Replace(msg, ": "+code+": ", ": ", 1)
	if msg == code {
		return strings.ReplaceAll(code, "_", " ")
	}
	return msg
}

// WriteBadRequest writes a 400 invalid error with err's message.
func WriteBadRequest(w http.ResponseWriter, err error) {
	WriteError(w, &errand.Error{Code: errand.CodeInvalid, Reason: err.Error()})
}

// DecodeJSON decodes the request body into v: at most maxBytes (0 means
// DefaultMaxBody; ErrTooLarge beyond), unknown fields refused, one JSON
// value only. Errors are *errand.Error values ready for WriteError.
func DecodeJSON(r *http.Request, v any, maxBytes int64) error {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBody
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBytes+1))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errand.Errorf(errand.CodeTooLarge, "request body is larger than %d bytes", mbe.Limit)
		}
		return errand.Errorf(errand.CodeInvalid, "read request body: %v", err)
	}
	if int64(len(body)) > maxBytes {
		return errand.Errorf(errand.CodeTooLarge, "request body is larger than %d bytes", maxBytes)
	}
	return Unmarshal(body, v)
}

// MaxJSONDepth bounds how deeply a JSON value may nest objects and arrays
// in a request body. Go's encoding/json refuses to read more than 10,000
// levels, so a body that deep would be stored and then fail to decode for
// whoever reads it back inside another object (a delegate reading its
// acquire answer); Unmarshal refuses it at once.
const MaxJSONDepth = 64

// Unmarshal decodes one JSON value strictly (unknown fields refused,
// nesting at most MaxJSONDepth, nothing but whitespace after the value)
// and says where a syntax or type error is.
func Unmarshal(data []byte, v any) error {
	if len(trimJSONSpace(data)) == 0 {
		return errand.Errorf(errand.CodeInvalid, "request body is empty; a JSON object is expected")
	}
	if off, ok := checkDepth(data, MaxJSONDepth); !ok {
		line, col := position(data, off+1)
		return errand.Errorf(errand.CodeInvalid, "JSON nests deeper than %d levels at line %d, column %d; %d is the limit", MaxJSONDepth, line, col, MaxJSONDepth)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errand.Errorf(errand.CodeInvalid, "%s", describeJSONError(data, err))
	}
	// The decoder stops after the first value: anything but whitespace
	// after it, even a stray ']' or '}', is refused.
	end := dec.InputOffset()
	if rest := trimJSONSpace(data[end:]); len(rest) > 0 {
		off := int64(len(data) - len(rest))
		line, col := position(data, off+1)
		return errand.Errorf(errand.CodeInvalid, "request body holds more than one JSON value: unexpected data at line %d, column %d after the first", line, col)
	}
	return nil
}

// isJSONSpace reports whether c is whitespace in JSON (RFC 8259).
func isJSONSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// trimJSONSpace removes JSON whitespace at both ends of data.
func trimJSONSpace(data []byte) []byte {
	for len(data) > 0 && isJSONSpace(data[0]) {
		data = data[1:]
	}
	for len(data) > 0 && isJSONSpace(data[len(data)-1]) {
		data = data[:len(data)-1]
	}
	return data
}

// checkDepth scans data for objects and arrays nested deeper than max,
// outside strings, and returns the offset of the bracket that goes too
// deep. It does not check the syntax: the decoder does that afterwards.
func checkDepth(data []byte, max int) (offset int64, ok bool) {
	depth := 0
	inString, escaped := false, false
	for i, c := range data {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
			if depth > max {
				return int64(i), false
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return 0, true
}

func describeJSONError(data []byte, err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		line, col := position(data, syn.Offset)
		return fmt.Sprintf("malformed JSON at line %d, column %d: %v", line, col, syn)
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			field = "(top level)"
		}
		return fmt.Sprintf("%s: cannot use JSON %s as %s", field, typ.Value, typ.Type)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "malformed JSON: unexpected end of input"
	}
	msg := err.Error()
	if f, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		return "unknown field " + f
	}
	return strings.TrimPrefix(msg, "json: ")
}

func position(data []byte, offset int64) (line, col int) {
	line, col = 1, 1
	for i := int64(0); i < offset-1 && i < int64(len(data)); i++ {
		if data[i] == '\n' {
			line++
			col = 1
		} else {
			col++
		}
	}
	return line, col
}
