package livelog_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every Writer's shipping goroutine ends with Close.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
