package poller_test

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
	"github.com/errandci/errand/httphelper"
	"github.com/errandci/errand/poller"
	"github.com/errandci/errand/router"
)

// A poller registers with the manager, acquires tasks for its free slots
// and reports what the router's handlers answer. Here the manager is an
// in-test client.Client; a real delegate passes client.New(url, token).
func Example() {
	r := router.New()
	r.HandleFunc("greet", func(w http.ResponseWriter, req *http.Request) {
		fmt.Fprintln(router.LogFrom(req.Context()), "greeting")
		httphelper.WriteJSON(w, map[string]string{"greeting": "hello"}, http.StatusOK)
	})
	manager := newFake()
	p := poller.New(poller.Config{
		Delegate: client.RegisterRequest{Name: "example", Capacity: 2},
		Wait:     100 * time.Millisecond,
		Logger:   quiet(),
	}, manager, r)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()
	manager.push(&errand.Task{ID: "t1", Type: "greet", Lease: &errand.Lease{Token: "L"}})
	for !manager.last("t1").State.Terminal() {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	fmt.Println(manager.states("t1"), string(manager.last("t1").Result))
	// Output: [running succeeded] {"greeting":"hello"}
}
