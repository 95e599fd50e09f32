// Package ost is Errand's object storage: where sealed logs and artifacts
// live. Backends (posix under the data dir, s3 on any S3-compatible
// service) keep every object under a base path and pass the conformance
// suite in osttest.
package ost

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"
	"unicode/utf8"
)

// ErrNotFound is returned for a key that holds no object.
var ErrNotFound = errors.New("object not found")

// ErrInvalidKey is returned for a key that could escape the base path.
var ErrInvalidKey = errors.New("invalid object key")

// ErrInvalidRange is returned by GetRange for a range that starts past
// the end of the object or is negative.
var ErrInvalidRange = errors.New("invalid object range")

// Storage stores objects by key. Keys are slash-separated relative paths;
// a backend never reads or writes outside its base path.
type Storage interface {
	// Put stores an object, replacing any object at key. size is the
	// number of bytes r holds, or -1 if unknown: the object is then
	// streamed (in parts on S3) and never held in memory whole. The
	// object becomes visible at once when Put returns nil: before, and
	// after a Put that failed (r failed or ended early, ctx ended), a
	// reader sees the previous object or none, never a part.
	Put(ctx context.Context, key string, r io.Reader, size int64) error
	// Get opens an object for reading; ErrNotFound if there is none.
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	// GetRange opens at most n bytes of an object from offset off (fewer
	// when the object ends first); n < 0 reads to the end.
	// ErrNotFound if there is none, ErrInvalidRange when off is negative
	// or past the end (off equal to the size reads nothing).
	GetRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, error)
	// Stat describes an object; ErrNotFound if there is none.
	Stat(ctx context.Context, key string) (ObjectInfo, error)
	// Delete removes an object; deleting a missing object is not an error.
	Delete(ctx context.Context, key string) error
	// List returns the objects whose keys start with prefix, in key order.
	List(ctx context.Context, prefix string) ([]ObjectInfo, error)
}

// ObjectInfo describes a stored object.
type ObjectInfo struct {
	Key          string
	Size         int64
	LastModified time.Time
}

// Bounds of a key: S3 allows keys of up to 1024 bytes, and most file
// systems names of up to 255 bytes.
const (
	MaxKeyLen     = 1024
	MaxElementLen = 255
)

// CleanKey checks that key is a relative slash path with no "." or ".."
// element, no empty element, no backslash, no control character (NUL
// included), valid UTF-8, at most MaxKeyLen bytes long with elements of
// at most MaxElementLen bytes, and returns it. Backends call it on every
// key they are given, so that no key can leave their base path.
func CleanKey(key string) (string, error) {
	if key == "" || len(key) > MaxKeyLen || strings.HasPrefix(key, "/") || strings.Contains(key, "\\") || !utf8.ValidString(key) {
		return "", fmt.Errorf("%w: %q", ErrInvalidKey, key)
	}
	for _, c := range []byte(key) {
		if c < 0x20 || c == 0x7f {
			return "", fmt.Errorf("%w: %q holds a control character", ErrInvalidKey, key)
		}
	}
	for _, el := range strings.Split(key, "/") {
		if el == "" || el == "." || el == ".." || len(el) > MaxElementLen {
			return "", fmt.Errorf("%w: %q", ErrInvalidKey, key)
		}
	}
	if path.Clean(key) != key {
		return "", fmt.Errorf("%w: %q", ErrInvalidKey, key)
	}
	return key, nil
}
