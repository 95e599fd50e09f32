package pipeline

import (
	"os"
	"testing"

	"github.com/errandci/errand/internal/jsonnetbox"
)

// TestMain lets this test binary serve as the Jsonnet evaluator child.
func TestMain(m *testing.M) {
	jsonnetbox.ServeIfChild()
	os.Exit(m.Run())
}
