package httphelper

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/errandci/errand"
)

// depthOf returns how deeply a decoded JSON value nests objects and arrays.
func depthOf(v any) int {
	d := 0
	switch x := v.(type) {
	case map[string]any:
		for _, e := range x {
			d = max(d, depthOf(e))
		}
		return d + 1
	case []any:
		for _, e := range x {
			d = max(d, depthOf(e))
		}
		return d + 1
	}
	return 0
}

// FuzzUnmarshal checks the strict decoder against encoding/json: it
// accepts a body exactly when the body is one valid JSON value nested at
// most MaxJSONDepth deep, and refuses everything else with an invalid
// error, never a panic.
func FuzzUnmarshal(f *testing.F) {
	for _, s := range []string{
		`{"type":"x"}`, `{"type":"x"}]not json`, `{"type":"x"}}`, `[1,2,{"a":[]}]`, `"s"`, `null`, `0`,
		` {"a":"[{\"}"} `, `{"a":1} {"b":2}`, `{"a":`, "\xff", `{"a":"\u0000"}`, "{\"a\":\"\xc3\x28\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var v any
		err := Unmarshal(data, &v)
		var ee *errand.Error
		if err != nil && (!errors.As(err, &ee) || ee.Code != errand.CodeInvalid) {
			t.Fatalf("Unmarshal(%q) = %v, want an invalid error", data, err)
		}
		var ref any
		valid := json.Unmarshal(data, &ref) == nil && depthOf(ref) <= MaxJSONDepth
		switch {
		case err == nil && !valid:
			t.Fatalf("Unmarshal(%q) accepted what encoding/json refuses or what nests too deep", data)
		case err != nil && valid:
			t.Fatalf("Unmarshal(%q) = %v for one valid JSON value", data, err)
		}
		if err == nil && depthOf(v) > MaxJSONDepth {
			t.Fatalf("Unmarshal(%q) accepted %d levels", data, depthOf(v))
		}
		// Into a struct, unknown fields and wrong types are refused the
		// same way.
		var st struct {
			Type   string            `json:"type"`
			Labels map[string]string `json:"labels"`
		}
		if err := Unmarshal(data, &st); err != nil && (!errors.As(err, &ee) || ee.Code != errand.CodeInvalid) {
			t.Fatalf("Unmarshal(%q) into a struct = %v, want an invalid error", data, err)
		}
	})
}
