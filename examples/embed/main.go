// Command embed runs a delegate with a task type of its own, "greet",
// the way another program embeds Errand's delegate side as a library.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/errandci/errand"
	"github.com/errandci/errand/delegate"
	"github.com/errandci/errand/httphelper"
	"github.com/errandci/errand/router"
)

func greet(w http.ResponseWriter, r *http.Request) {
	var task errand.Task
	var data struct {
		Name string `json:"name"`
	}
	if err := httphelper.DecodeJSON(r, &task, 0); err != nil {
		httphelper.WriteError(w, err)
		return
	}
	if err := json.Unmarshal(task.Data, &data); err != nil || data.Name == "" {
		httphelper.WriteError(w, errand.Errorf(errand.CodeInvalid, "greet needs {\"name\": …}"))
		return
	}
	fmt.Fprintf(router.LogFrom(r.Context()), "greeting %s\n", data.Name)
	httphelper.WriteJSON(w, map[string]string{"greeting": "hello, " + data.Name}, http.StatusOK)
}

func main() {
	cfg := delegate.Config{Manager: os.Getenv("ERRAND_MANAGER"), Token: os.Getenv("ERRAND_TOKEN"), Capacity: 4}
	flag.StringVar(&cfg.Manager, "manager", cfg.Manager, "manager URL ($ERRAND_MANAGER)")
	flag.StringVar(&cfg.Token, "token", cfg.Token, "registration token ($ERRAND_TOKEN)")
	flag.StringVar(&cfg.StateDir, "state-dir", os.Getenv("ERRAND_STATE_DIR"), "state directory")
	flag.Parse()

	r := router.New()
	r.HandleFunc("greet", greet)
	d, err := delegate.New(cfg, r)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := d.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
