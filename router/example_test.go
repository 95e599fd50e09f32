package router_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"

	"github.com/errandci/errand"
	"github.com/errandci/errand/httphelper"
	"github.com/errandci/errand/router"
)

// A task handler is an http.Handler: it reads the task from the request
// body, logs to the task's log and answers with its result.
func Example() {
	r := router.New()
	r.HandleFunc("greet", func(w http.ResponseWriter, req *http.Request) {
		var task errand.Task
		if err := json.NewDecoder(req.Body).Decode(&task); err != nil {
			httphelper.WriteBadRequest(w, err)
			return
		}
		var data struct{ Name string }
		if err := json.Unmarshal(task.Data, &data); err != nil {
			httphelper.WriteBadRequest(w, err)
			return
		}
		fmt.Fprintf(router.LogFrom(req.Context()), "greeting %s\n", data.Name)
		httphelper.WriteJSON(w, map[string]string{"greeting": "hello, " + data.Name}, http.StatusOK)
	})

	out := r.Serve(context.Background(), &errand.Task{ID: "t1", Type: "greet", Data: json.RawMessage(`{"name":"ada"}`)}, os.Stdout)
	fmt.Println(out.State, string(out.Result))

	out = r.Serve(context.Background(), &errand.Task{ID: "t2", Type: "wave"}, os.Stdout)
	fmt.Println(out.State, out.Error.Code)
	// Output:
	// greeting ada
	// succeeded {"greeting":"hello, ada"}
	// failed unknown_task_type
}
