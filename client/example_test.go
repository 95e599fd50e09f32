package client_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/httphelper"
)

// A delegate reports a result under a lease that the manager has given to
// another delegate in the meantime: the manager refuses it, and the error
// compares equal to client.ErrLeaseLost.
func Example() {
	manager := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httphelper.WriteError(w, errand.Errorf(errand.CodeLeaseLost, "task t1 is leased to another delegate"))
	}))
	defer manager.Close()

	c := client.New(manager.URL, "delegate-token")
	_, err := c.UpdateStatus(context.Background(), "t1", &client.StatusUpdate{
		Lease:  "stale-lease",
		State:  errand.StateSucceeded,
		Result: []byte(`{"ok":true}`),
	})
	if errors.Is(err, client.ErrLeaseLost) {
		fmt.Println("lease lost:", err)
	}
	// Output:
	// lease lost: report succeeded for task t1: lease_lost: task t1 is leased to another delegate
}
