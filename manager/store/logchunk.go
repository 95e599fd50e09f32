package store

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
)

// EncodeLogChunk writes lines as one chunk body, the form both stores
// keep an append in: each line as its length in
// bytes (decimal), a colon and its bytes. Lines may hold any bytes,
// newlines included.
func EncodeLogChunk(lines []string) []byte {
	n := 0
	for _, l := range lines {
		n += len(l) + 8
	}
	b := make([]byte, 0, n)
	for _, l := range lines {
		b = strconv.AppendInt(b, int64(len(l)), 10)
		b = append(b, ':')
		b = append(b, l...)
	}
	return b
}

// DecodeLogChunk appends to out the lines of a chunk body from its line skip
// on, until out holds limit lines. A body that EncodeLogChunk did not
// write (a length with a sign or a leading zero, or longer than what
// follows) is an error.
func DecodeLogChunk(out []string, body []byte, skip int64, limit int) ([]string, error) {
	for i := int64(0); len(body) > 0 && len(out) < limit; i++ {
		colon := bytes.IndexByte(body, ':')
		if colon < 1 {
			return out, errors.New("corrupt log chunk: no length")
		}
		n, ok := chunkLength(body[:colon], len(body)-colon-1)
		if !ok {
			return out, fmt.Errorf("corrupt log chunk: bad length %q", body[:min(colon, 24)])
		}
		if i >= skip {
			out = append(out, string(body[colon+1:colon+1+n]))
		}
		body = body[colon+1+n:]
	}
	return out, nil
}

// chunkLength parses the length of a line as EncodeLogChunk writes it:
// decimal digits, no sign, no leading zero, at most rest.
func chunkLength(digits []byte, rest int) (int, bool) {
	if len(digits) == 0 || len(digits) > 1 && digits[0] == '0' {
		return 0, false
	}
	n := 0
	for _, d := range digits {
		if d < '0' || d > '9' {
			return 0, false
		}
		n = n*10 + int(d-'0')
		if n > rest {
			return 0, false
		}
	}
	return n, true
}
