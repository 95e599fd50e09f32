package httphelper

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/errandci/errand"
)

// Every API error code maps to a status, and a response with that status
// and no body maps back to a code with the same status: the client can
// always rebuild an error that errors.Is recognises.
func TestStatusTableRoundTrip(t *testing.T) {
	for code, status := range statusOf {
		if got := Status(code); got != status {
			t.Errorf("Status(%s) = %d, want %d", code, got, status)
		}
		if back := Status(CodeForStatus(status)); back != status {
			t.Errorf("CodeForStatus(%d) = %s, whose status is %d", status, CodeForStatus(status), back)
		}
	}
	if got := Status(errand.CodeExitCode); got != http.StatusUnprocessableEntity {
		t.Errorf("a task outcome code maps to %d, want 422", got)
	}
}

func TestWriteError(t *testing.T) {
	cases := []struct {
		err        error
		status     int
		code       string
		reason     string
		hideDetail string
	}{
		{errand.Errorf(errand.CodeLeaseLost, "lease of task x is stale"), 409, errand.CodeLeaseLost, "lease of task x is stale", ""},
		{fmt.Errorf("report task x: %w", errand.ErrIllegalTransition), 409, errand.CodeIllegalTransition, "report task x: illegal_transition", ""},
		{errand.ErrNotFound, 404, errand.CodeNotFound, "not found", ""},
		{errors.New("disk I/O error at /var/lib/errand/errand.db"), 500, errand.CodeInternal, "internal error", "/var/lib"},
	}
	for _, c := range cases {
		rec := httptest.NewRecorder()
		WriteErrorOp(rec, c.err, "op-1")
		var body ErrorBody
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatalf("%v: body %q: %v", c.err, rec.Body, err)
		}
		if rec.Code != c.status || body.Code != c.code || body.Kind != errand.KindError || body.OperationID != "op-1" {
			t.Errorf("%v: got %d %+v", c.err, rec.Code, body)
		}
		if !strings.HasPrefix(body.Reason, c.reason) {
			t.Errorf("%v: reason %q, want it to start with %q", c.err, body.Reason, c.reason)
		}
		if c.hideDetail != "" && strings.Contains(body.Reason, c.hideDetail) {
			t.Errorf("internal error leaks %q: %q", c.hideDetail, body.Reason)
		}
		if !errors.Is(body.Err(), &errand.Error{Code: c.code}) {
			t.Errorf("%v: rebuilt error does not match its code", c.err)
		}
	}
}

func TestDecodeJSON(t *testing.T) {
	type spec struct {
		Type    string `json:"type"`
		Timeout int    `json:"timeout"`
	}
	cases := []struct {
		name, body string
		max        int64
		code, want string
	}{
		{"ok", `{"type":"x","timeout":3}`, 0, "", ""},
		{"ok with whitespace", " \t\r\n{\"type\":\"x\",\"timeout\":3}\r\n\t ", 0, "", ""},
		{"unknown field", `{"type":"x","tiemout":3}`, 0, errand.CodeInvalid, `unknown field "tiemout"`},
		{"syntax error with position", "{\n  \"type\": \"x\",,\n}", 0, errand.CodeInvalid, "line 2"},
		{"wrong type", `{"timeout":"soon"}`, 0, errand.CodeInvalid, "timeout"},
		{"empty", ``, 0, errand.CodeInvalid, "empty"},
		{"two values", `{"type":"a"} {"type":"b"}`, 0, errand.CodeInvalid, "more than one"},
		{"truncated", `{"type":"a"`, 0, errand.CodeInvalid, "unexpected end"},
		{"too large", `{"type":"` + strings.Repeat("a", 100) + `"}`, 64, errand.CodeTooLarge, "larger than 64 bytes"},
		{"trailing bracket", `{"type":"x"}]not json`, 0, errand.CodeInvalid, "more than one JSON value: unexpected data at line 1, column 13"},
		{"trailing brace", `{"type":"x"}}`, 0, errand.CodeInvalid, "more than one JSON value"},
		{"trailing brace after space", "{\"type\":\"x\"} \n }", 0, errand.CodeInvalid, "line 2, column 2"},
		{"trailing garbage", `{"type":"x"}x`, 0, errand.CodeInvalid, "more than one JSON value"},
		{"trailing NUL", "{\"type\":\"x\"}\x00", 0, errand.CodeInvalid, "more than one JSON value"},
		{"trailing form feed", "{\"type\":\"x\"}\f", 0, errand.CodeInvalid, "more than one JSON value"},
		{"too deep", `{"type":"x","timeout":` + strings.Repeat("[", MaxJSONDepth) + strings.Repeat("]", MaxJSONDepth) + `}`, 0, errand.CodeInvalid, fmt.Sprintf("deeper than %d levels at line 1, column %d", MaxJSONDepth, 22+MaxJSONDepth)},
		{"very deep", strings.Repeat(`{"a":`, 10000) + strings.Repeat("}", 10000), 0, errand.CodeInvalid, "deeper than"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/", strings.NewReader(c.body))
			var v spec
			err := DecodeJSON(r, &v, c.max)
			if c.code == "" {
				if err != nil || v.Type != "x" || v.Timeout != 3 {
					t.Fatalf("DecodeJSON = %v, %+v", err, v)
				}
				return
			}
			if errand.ErrorCode(err) != c.code || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("DecodeJSON error = %v, want code %s mentioning %q", err, c.code, c.want)
			}
		})
	}
}

// Nesting up to MaxJSONDepth is accepted, and brackets inside strings,
// escaped quotes included, do not count.
func TestUnmarshalDepth(t *testing.T) {
	var v any
	deepest := strings.Repeat("[", MaxJSONDepth) + strings.Repeat("]", MaxJSONDepth)
	if err := Unmarshal([]byte(deepest), &v); err != nil {
		t.Errorf("%d levels: %v", MaxJSONDepth, err)
	}
	inString := `{"a":"` + strings.Repeat(`[{\"`, 1000) + `"}`
	if err := Unmarshal([]byte(inString), &v); err != nil {
		t.Errorf("brackets in a string: %v", err)
	}
	tooDeep := "[" + deepest + "]"
	if err := Unmarshal([]byte(tooDeep), &v); errand.ErrorCode(err) != errand.CodeInvalid || !strings.Contains(err.Error(), fmt.Sprint(MaxJSONDepth)) {
		t.Errorf("%d levels: %v, want invalid naming the limit", MaxJSONDepth+1, err)
	}
}

// A body cut by http.MaxBytesReader upstream is reported as too large.
func TestDecodeJSONMaxBytesReader(t *testing.T) {
	rec := httptest.NewRecorder()
	r := httptest.NewRequest("POST", "/", strings.NewReader(`{"a":"`+strings.Repeat("b", 100)+`"}`))
	r.Body = http.MaxBytesReader(rec, r.Body, 10)
	var v map[string]string
	if err := DecodeJSON(r, &v, 1000); errand.ErrorCode(err) != errand.CodeTooLarge {
		t.Fatalf("DecodeJSON error = %v, want too_large", err)
	}
}

// loggingRecorder is a ResponseWriter that logs internal errors, as the
// manager's does.
type loggingRecorder struct {
	*httptest.ResponseRecorder
	logged []error
}

func (l *loggingRecorder) LogError(err error) { l.logged = append(l.logged, err) }

// A response that cannot be encoded is a 500 that names the request's
// operation id, and the real error goes to the writer's log.
func TestWriteJSONUnencodableIsLoggedWithOperationID(t *testing.T) {
	w := &loggingRecorder{ResponseRecorder: httptest.NewRecorder()}
	w.Header().Set(OperationIDHeader, "op-1")
	WriteJSON(w, map[string]any{"x": make(chan int)}, http.StatusOK)
	var body ErrorBody
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
		t.Fatalf("body %q: %v", w.Body, err)
	}
	if w.Code != http.StatusInternalServerError || body.Code != errand.CodeInternal || body.OperationID != "op-1" ||
		!strings.Contains(body.Reason, "op-1") {
		t.Errorf("WriteJSON of a channel = %d %+v, want 500 internal naming op-1", w.Code, body)
	}
	if len(w.logged) != 1 || !strings.Contains(w.logged[0].Error(), "encode response") {
		t.Errorf("logged %v, want the encoding error", w.logged)
	}
}
