package delegate_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/errandci/errand"
	"github.com/errandci/errand/delegate"
	"github.com/errandci/errand/httphelper"
	"github.com/errandci/errand/internal/fakemanager"
	"github.com/errandci/errand/router"
)

// A program embeds the delegate side with a handler of its own: the
// delegate registers, heartbeats and runs what it acquires through the
// router until it is stopped. Here the manager is in memory; a real
// program gives Config.Manager and Config.Token instead of Client.
func Example() {
	r := router.New()
	r.HandleFunc("greet", func(w http.ResponseWriter, req *http.Request) {
		fmt.Fprintln(router.LogFrom(req.Context()), "greeting")
		httphelper.WriteJSON(w, map[string]string{"greeting": "hello"}, http.StatusOK)
	})
	manager := fakemanager.New()
	state, err := os.MkdirTemp("", "delegate-example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(state)
	log := logrus.New()
	log.SetOutput(io.Discard)
	d, err := delegate.New(delegate.Config{Name: "example", Client: manager, StateDir: state, Capacity: 2, Log: log}, r)
	if err != nil {
		panic(err)
	}
	if err := d.Start(context.Background()); err != nil {
		panic(err)
	}
	fmt.Println("registered as", d.ID())
	manager.Push(&errand.Task{ID: "t1", Type: "greet", Lease: &errand.Lease{Token: "L"}})
	for !manager.Last("t1").State.Terminal() {
		time.Sleep(5 * time.Millisecond)
	}
	if err := d.Stop(context.Background()); err != nil {
		panic(err)
	}
	fmt.Println(manager.States("t1"), string(manager.Last("t1").Result))
	// Output:
	// registered as d1
	// [running succeeded] {"greeting":"hello"}
}
