package sqlite

import "time"

// SetCheckpointEvery sets how often stores opened from now on checkpoint
// their WAL, until the returned function restores it.
func SetCheckpointEvery(d time.Duration) (restore func()) {
	old := checkpointEvery
	checkpointEvery = d
	return func() { checkpointEvery = old }
}
