// Package hooks reads webhook deliveries that start pipeline runs: it
// checks their HMAC-SHA256 signature against a pipeline's hook secrets and
// maps a generic, GitHub or Gitea push or pull-request payload to what a
// run is started with (branch, event, commit, variables). The service in
// service.go records every delivery, refuses replays and starts the runs.
package hooks

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"

	"github.com/errandci/errand"
)

// Signature headers, looked for in this order: Errand's own, Gitea's
// (plain hex), GitHub's (which Gitea sends too).
const (
	HeaderErrandSignature = "X-Errand-Signature-256"
	HeaderGiteaSignature  = "X-Gitea-Signature"
	HeaderGitHubSignature = "X-Hub-Signature-256"
)

// signaturePrefix starts the value of X-Errand-Signature-256 and
// X-Hub-Signature-256: "sha256=<hex>".
const signaturePrefix = "sha256="

// Sign returns the value of an X-Errand-Signature-256 (or
// X-Hub-Signature-256) header for body: "sha256=" and the hex HMAC-SHA256
// of body keyed with secret.
func Sign(secret string, body []byte) string {
	return signaturePrefix + hex.EncodeToString(mac(secret, body))
}

func mac(secret string, body []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return m.Sum(nil)
}

// signature returns the header that carries a delivery's signature and
// the MAC it holds. No signature header, or one that is not a SHA-256
// MAC in hex, is errand.CodeUnauthorized.
func signature(h http.Header) (header string, sum []byte, err error) {
	for _, name := range []string{HeaderErrandSignature, HeaderGiteaSignature, HeaderGitHubSignature} {
		v := strings.TrimSpace(h.Get(name))
		if v == "" {
			continue
		}
		hexSum := v
		if name != HeaderGiteaSignature {
			var ok bool
			if hexSum, ok = strings.CutPrefix(v, signaturePrefix); !ok {
				return name, nil, errand.Errorf(errand.CodeUnauthorized, "%s: the value is not sha256=<hex HMAC-SHA256 of the body>", name)
			}
		}
		sum, err := hex.DecodeString(hexSum)
		if err != nil || len(sum) != sha256.Size {
			return name, nil, errand.Errorf(errand.CodeUnauthorized, "%s: the value is not a hex HMAC-SHA256 of the body", name)
		}
		return name, sum, nil
	}
	return "", nil, errand.Errorf(errand.CodeUnauthorized, "the delivery is not signed: an %s (or %s, %s) header with the HMAC-SHA256 of the body under the pipeline's hook secret is required",
		HeaderErrandSignature, HeaderGitHubSignature, HeaderGiteaSignature)
}

// Verify checks the signature of a delivery against each of secrets (a
// pipeline's current hook secret and, during a rotation, the previous
// one), in constant time. It returns the header that carried the
// signature and the index of the secret that matched. A missing,
// malformed or wrong signature is errand.CodeUnauthorized.
func Verify(h http.Header, body []byte, secrets ...string) (header string, matched int, err error) {
	header, sum, err := signature(h)
	if err != nil {
		return header, -1, err
	}
	matched = -1
	for i, s := range secrets {
		if s == "" {
			continue
		}
		// Every secret is tried, so that the time does not say which one
		// matched.
		if hmac.Equal(mac(s, body), sum) && matched < 0 {
			matched = i
		}
	}
	if matched < 0 {
		return header, -1, errand.Errorf(errand.CodeUnauthorized, "%s does not match the body under the pipeline's hook secret", header)
	}
	return header, matched, nil
}
