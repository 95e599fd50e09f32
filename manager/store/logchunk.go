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
// on, until out holds limit lines.
func DecodeLogChunk(out []string, body []byte, skip int64, limit int) ([]string, error) {
	for i := int64(0); len(body) > 0 && len(out) < limit; i++ {
		colon := bytes.IndexByte(body, ':')
		if colon < 1 {
			return out, errors.New("corrupt log chunk: no length")
		}
		n, err := strconv.Atoi(string(body[:colon]))
		if err != nil || n < 0 || n > len(body)-colon-1 {
			return out, fmt.Errorf("corrupt log chunk: bad length %q", body[:colon])
		}
		if i >= skip {
			out = append(out, string(body[colon+1:colon+1+n]))
		}
		body = body[colon+1+n:]
	}
	return out, nil
}
