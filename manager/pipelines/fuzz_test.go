package pipelines

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/httphelper"
	"github.com/errandci/errand/manager/store"
)

// FuzzPipelineSpec: whatever body a request brings, decoding and
// validating it never panics, refuses with errand.CodeInvalid only, and
// a spec it accepts is stored and read back unchanged; a run name reads
// back as it is written.
func FuzzPipelineSpec(f *testing.F) {
	for _, seed := range []string{
		`{"name":"api","config":"stages: []"}`,
		`{"name":"api","config":"stages: []","filename":"x.jsonnet","variables":{"A":"1"}}`,
		`{"name":"src","config_path":"ci/config.yml","source":{"git":{"url":"https://example.test/r.git","ref":"main"}}}`,
		`{"name":"p","config_path":"../x.yml","source":{"git":{}}}`,
		`{"name":"n","config":"x","notify":[{"webhook":{"url":"https://h/x","secret":"S","on":["failed"]}},{"slack":{"url_secret":"U"}}],"triggers":{"webhook":{"secrets":["K"]}}}`,
		`{"name":"Bad Name","variables":{"ERRAND_X":"1"},"source":[1]}`,
		`{"name":"a","config":"y","notify":[{}]}`,
		`api#42`, `api#0`, `#1`, `{}`, `null`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if name, n, ok := ParseRunName(string(body)); ok {
			if store.CheckPipelineName(name) != nil || n < 1 {
				t.Fatalf("ParseRunName(%q) = %q, %d", body, name, n)
			}
			if back, m, ok := ParseRunName(name + "#" + jsonNumber(n)); !ok || back != name || m != n {
				t.Fatalf("ParseRunName does not read back %s#%d", name, n)
			}
		}
		var spec client.PipelineSpec
		if err := httphelper.Unmarshal(body, &spec); err != nil {
			return
		}
		if err := Validate(&spec); err != nil {
			if errand.ErrorCode(err) != errand.CodeInvalid {
				t.Fatalf("Validate(%s) = %v, want an invalid error", body, err)
			}
			return
		}
		raw, err := encodeSpec(&spec)
		if err != nil {
			t.Fatalf("encode %+v: %v", spec, err)
		}
		if err := (store.PipelineCreateParams{Pipeline: &store.Pipeline{Name: spec.Name, Spec: raw}}).Check(); err != nil {
			t.Fatalf("a valid spec is refused by the store: %v", err)
		}
		back, err := Spec(&store.Pipeline{Name: spec.Name, Spec: raw})
		if err != nil {
			t.Fatalf("decode %s: %v", raw, err)
		}
		if !sameSpec(back, &spec) {
			t.Fatalf("spec read back as %+v, want %+v", back, spec)
		}
	})
}

func jsonNumber(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// sameSpec compares specs as JSON: a source is kept as the bytes given.
func sameSpec(a, b *client.PipelineSpec) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	var va, vb any
	_ = json.Unmarshal(ja, &va)
	_ = json.Unmarshal(jb, &vb)
	return reflect.DeepEqual(va, vb)
}
