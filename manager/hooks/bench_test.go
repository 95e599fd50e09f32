package hooks

import (
	"bytes"
	"net/http"
	"testing"
)

// BenchmarkVerify is the work an unauthenticated caller can make the
// manager do per delivery at the default body limit: one HMAC per valid
// secret over 1 MiB.
func BenchmarkVerify(b *testing.B) {
	body := bytes.Repeat([]byte("x"), DefaultMaxBody)
	h := http.Header{}
	h.Set(HeaderErrandSignature, Sign("wrong", body))
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, _, err := Verify(h, body, "current-secret", "previous-secret"); err == nil {
			b.Fatal("verified")
		}
	}
}

// BenchmarkParseGitHubPush maps a GitHub push payload.
func BenchmarkParseGitHubPush(b *testing.B) {
	body := readPayload(b, "github-push.json")
	for b.Loop() {
		if _, err := Parse(SourceGitHub, "push", body); err != nil {
			b.Fatal(err)
		}
	}
}
