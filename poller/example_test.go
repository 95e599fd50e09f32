package poller_test

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/errandci/errand"
	"github.com/errandci/errand/httphelper"
	"github.com/errandci/errand/internal/fakemanager"
	"github.com/errandci/errand/poller"
	"github.com/errandci/errand/router"
)

// A poller acquires tasks for its free slots as a registered delegate (its
// Session) and reports what the router's handlers answer. Here the
// manager is in memory and the session fixed; a program that embeds the
// delegate side uses delegate.New, which registers, heartbeats and runs a
// poller like this one.
func Example() {
	r := router.New()
	r.HandleFunc("greet", func(w http.ResponseWriter, req *http.Request) {
		fmt.Fprintln(router.LogFrom(req.Context()), "greeting")
		httphelper.WriteJSON(w, map[string]string{"greeting": "hello"}, http.StatusOK)
	})
	manager := fakemanager.New()
	p, err := poller.New(poller.Config{
		Session:  session{manager},
		Router:   r,
		Capacity: 2,
		Wait:     100 * time.Millisecond,
		Logger:   quiet(),
	})
	if err != nil {
		panic(err)
	}
	if err := p.Start(context.Background()); err != nil {
		panic(err)
	}
	manager.Push(&errand.Task{ID: "t1", Type: "greet", Lease: &errand.Lease{Token: "L"}})
	for !manager.Last("t1").State.Terminal() {
		time.Sleep(5 * time.Millisecond)
	}
	if err := p.Stop(context.Background()); err != nil {
		panic(err)
	}
	fmt.Println(manager.States("t1"), string(manager.Last("t1").Result))
	// Output: [running succeeded] {"greeting":"hello"}
}
