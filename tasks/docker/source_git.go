package docker

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/errandci/errand"
	"github.com/errandci/errand/internal/workspace"
	"github.com/errandci/errand/tasks/runtime"
)

// populateCheckout fills the stage's volume with a checkout of the
// stage's Git commit: git runs on this host (the image may have no git),
// in a directory of its own under Config.CheckoutDir, and the whole
// checkout, .git included, is copied into the volume; the directory is
// removed afterwards, whatever happened.
func (h *Handlers) populateCheckout(ctx context.Context, co *runtime.Checkout, img, vol string, labels map[string]string, logs io.Writer) error {
	dir, err := os.MkdirTemp(h.cfg.CheckoutDir, "errand-checkout-")
	if err != nil {
		return errand.Errorf(errand.CodeTaskFailed, "make a directory for the checkout: %v", err)
	}
	defer os.RemoveAll(dir)
	if err := co.Into(ctx, dir); err != nil {
		return err
	}
	if err := h.populate(ctx, img, vol, labels, dir, workspace.Options{NoGit: true, WithGit: true}, logs); err != nil {
		return err
	}
	fmt.Fprintf(logs, "workspace: a checkout of %s\n", co.Source.Commit)
	return nil
}
