package hooks

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"
	"testing"

	"github.com/errandci/errand"
)

// hexMAC computes the signature the way a sender does, independently of
// Sign.
func hexMAC(secret, body string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(body))
	return hex.EncodeToString(m.Sum(nil))
}

// TestVerify: each header form verifies with a real HMAC; a wrong secret,
// a changed body, a malformed value or no header is unauthorized; during
// a rotation either secret verifies.
func TestVerify(t *testing.T) {
	body := `{"ref":"main"}`
	good := hexMAC("s3cret", body)
	if Sign("s3cret", []byte(body)) != "sha256="+good {
		t.Fatalf("Sign = %s, want sha256=%s", Sign("s3cret", []byte(body)), good)
	}
	cases := []struct {
		header, value string
		body          string
		secrets       []string
		ok            bool
		matched       int
	}{
		{HeaderErrandSignature, "sha256=" + good, body, []string{"s3cret"}, true, 0},
		{HeaderGitHubSignature, "sha256=" + good, body, []string{"s3cret"}, true, 0},
		{HeaderGiteaSignature, good, body, []string{"s3cret"}, true, 0},
		{HeaderErrandSignature, "sha256=" + strings.ToUpper(good), body, []string{"s3cret"}, true, 0},
		{HeaderErrandSignature, "sha256=" + good, body, []string{"new", "s3cret"}, true, 1},
		{HeaderErrandSignature, "sha256=" + good, body, []string{"other"}, false, -1},
		{HeaderErrandSignature, "sha256=" + good, body + " ", []string{"s3cret"}, false, -1},
		{HeaderErrandSignature, good, body, []string{"s3cret"}, false, -1},
		{HeaderGiteaSignature, "sha256=" + good, body, []string{"s3cret"}, false, -1},
		{HeaderErrandSignature, "sha256=" + good[:10], body, []string{"s3cret"}, false, -1},
		{HeaderErrandSignature, "sha256=zz" + good[2:], body, []string{"s3cret"}, false, -1},
		{HeaderErrandSignature, "sha256=" + good, body, []string{""}, false, -1},
		{"", "", body, []string{"s3cret"}, false, -1},
	}
	for i, c := range cases {
		h := http.Header{}
		if c.header != "" {
			h.Set(c.header, c.value)
		}
		_, matched, err := Verify(h, []byte(c.body), c.secrets...)
		if c.ok != (err == nil) || matched != c.matched {
			t.Errorf("case %d (%s: %.20s): matched %d, err %v; want ok %v, matched %d", i, c.header, c.value, matched, err, c.ok, c.matched)
		}
		if err != nil && errand.ErrorCode(err) != errand.CodeUnauthorized {
			t.Errorf("case %d: code %s, want unauthorized", i, errand.ErrorCode(err))
		}
	}
}
