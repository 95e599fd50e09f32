package posix

import (
	"crypto/rand"
	"errors"
	"syscall"
)

var randRead = rand.Read

// isNotDir reports a path whose parent is a file: for a key store that is
// simply a missing object.
func isNotDir(err error) bool { return errors.Is(err, syscall.ENOTDIR) }
