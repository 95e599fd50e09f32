package manager

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind: every
// background loop, long-poll and follower must end with its server.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
