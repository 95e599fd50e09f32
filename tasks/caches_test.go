package tasks

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func TestCacheSpec(t *testing.T) {
	for _, tt := range []struct {
		name, spec string
		problems   []string // "field: part of the message"
	}{
		{"whole", `{"key":["deps",{"checksum":["go.sum","**/*.lock"]},{"env":"GOVERSION"},{"arch":null},{"os":null}],"paths":["vendor","node_modules"],"restore_keys":["deps-"],"group":"shared"}`, nil},
		{"empty", `{}`, []string{"key: at least one part", "paths: at least one path"}},
		{"escaping paths", `{"key":["k"],"paths":["../x","/abs","a/../b"]}`, []string{`paths[0]: "../x" escapes the workspace`, `paths[1]: "/abs" is absolute`, `paths[2]: "a/../b" escapes`}},
		{"bad literal", `{"key":["a/b"],"paths":["p"]}`, []string{`key[0]: "a/b": want letters`}},
		{"bad env", `{"key":[{"env":"A-B"}],"paths":["p"]}`, []string{`key[0].env: "A-B" is not a variable name`}},
		{"bad glob", `{"key":[{"checksum":["../go.sum"]}],"paths":["p"]}`, []string{`key[0].checksum[0]: "../go.sum" escapes`}},
		{"bad prefix and group", `{"key":["k"],"paths":["p"],"restore_keys":["a b"],"group":"../g"}`, []string{`restore_keys[0]: "a b"`, `group: "../g"`}},
		{"too many parts", `{"key":[` + strings.Repeat(`"a",`, MaxCacheKeyParts) + `"a"],"paths":["p"]}`, []string{"key: 17 parts, at most 16"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var c Cache
			if err := json.Unmarshal([]byte(tt.spec), &c); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range c.Problems() {
				got = append(got, p[0]+": "+p[1])
			}
			if len(got) != len(tt.problems) {
				t.Fatalf("Problems = %q, want %d like %q", got, len(tt.problems), tt.problems)
			}
			for i, want := range tt.problems {
				if !strings.Contains(got[i], want) {
					t.Errorf("problem %d = %q, want %q", i, got[i], want)
				}
			}
		})
	}
}

func TestCacheKeyPartDecode(t *testing.T) {
	for _, tt := range []struct{ in, err string }{
		{`{"arch":1}`, "arch takes no value"},
		{`{"checksum":[]}`, "checksum: want a list of globs"},
		{`{"env":""}`, "env: want the name"},
		{`{"env":"A","os":null}`, "exactly one of"},
		{`{"size":null}`, `unknown key part "size"`},
		{`3`, "a key part is a string"},
		{`null`, "a key part is a string"},
	} {
		var p CacheKeyPart
		if err := json.Unmarshal([]byte(tt.in), &p); err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("decode %s = %v, want %q", tt.in, err, tt.err)
		}
	}
	var c Cache
	in := `{"key":["deps",{"checksum":["go.sum"]},{"env":"V"},{"arch":null},{"os":null}],"paths":["p"]}`
	if err := json.Unmarshal([]byte(in), &c); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(&c)
	if err != nil || string(b) != in {
		t.Errorf("round trip = %s, %v; want %s", b, err, in)
	}
}

func TestCacheResolveKey(t *testing.T) {
	var c Cache
	if err := json.Unmarshal([]byte(`{"key":["deps",{"checksum":["go.sum"]},{"env":"V"},{"env":"UNSET"},{"os":null},{"arch":null}],"paths":["p"]}`), &c); err != nil {
		t.Fatal(err)
	}
	in := CacheKeyInputs{Env: map[string]string{"V": "1.2"}, OS: "linux", Arch: "amd64",
		Checksum: func(globs []string) (string, error) { return strings.Repeat("ab", 32), nil }}
	key, err := c.ResolveKey(in)
	if want := "deps-" + strings.Repeat("ab", 16) + "-1.2-none-linux-amd64"; err != nil || key != want {
		t.Errorf("ResolveKey = %q, %v; want %q", key, err, want)
	}
	in.Env["V"] = "a/b"
	if _, err := c.ResolveKey(in); err == nil || !strings.Contains(err.Error(), "want letters") {
		t.Errorf("ResolveKey with an unsafe value = %v", err)
	}
	in.Env["V"], in.Checksum = "1", func([]string) (string, error) { return "", fmt.Errorf("go.sum: link out of the workspace") }
	if _, err := c.ResolveKey(in); err == nil || !strings.Contains(err.Error(), "(checksum of go.sum): go.sum: link") {
		t.Errorf("ResolveKey with a failed checksum = %v", err)
	}
}

// FuzzCacheSpec decodes arbitrary cache declarations: no panic, and a
// declaration without problems encodes back to one that decodes alike
// and resolves to a safe key.
func FuzzCacheSpec(f *testing.F) {
	f.Add([]byte(`{"key":["deps",{"checksum":["go.sum"]},{"env":"V"},{"arch":null},{"os":null}],"paths":["vendor"],"restore_keys":["deps-"]}`))
	f.Add([]byte(`{"key":[{"arch":{}}],"paths":["a/**"],"group":"g"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var c Cache
		if json.Unmarshal(data, &c) != nil || len(c.Problems()) > 0 {
			return
		}
		b, err := json.Marshal(&c)
		if err != nil {
			t.Fatal(err)
		}
		var again Cache
		if err := json.Unmarshal(b, &again); err != nil || len(again.Problems()) > 0 {
			t.Fatalf("re-decode of %s: %v %v", b, err, again.Problems())
		}
		key, err := c.ResolveKey(CacheKeyInputs{OS: "linux", Arch: "amd64", Checksum: func([]string) (string, error) { return "00", nil }})
		if err == nil && CheckCacheKey(key) != nil {
			t.Fatalf("unsafe key %q", key)
		}
	})
}
