package manager

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/errandci/errand"
	"github.com/errandci/errand/client"
)

// Secrets in task data reach the delegate that acquires the task, and no
// user-side answer.
func TestSecretsMaskedOnUserSide(t *testing.T) {
	e := newEnv(t)
	d := e.register("d", nil)
	data := json.RawMessage(`{"commands":["deploy"],"secrets":{"DEPLOY_KEY":"hunter2","API":"xyzzy"}}`)
	created := e.create(&client.TaskSpec{Type: errand.TypeExecExecute, Data: data})

	var got errand.Task
	e.must(http.StatusOK, "GET", "/api/v1/tasks/"+created.ID, testAdmin, nil, &got)
	var list client.TaskList
	e.must(http.StatusOK, "GET", "/api/v1/tasks", testAdmin, nil, &list)
	for _, shown := range []json.RawMessage{created.Data, got.Data, list.Items[0].Data} {
		if strings.Contains(string(shown), "hunter2") || strings.Contains(string(shown), "xyzzy") {
			t.Fatalf("user side shows a secret: %s", shown)
		}
		var v struct {
			Commands []string          `json:"commands"`
			Secrets  map[string]string `json:"secrets"`
		}
		if err := json.Unmarshal(shown, &v); err != nil || v.Secrets["DEPLOY_KEY"] != "******" || v.Commands[0] != "deploy" {
			t.Fatalf("masked data = %s (%v)", shown, err)
		}
	}

	acq := e.acquire(d, "max=1")
	if len(acq.Tasks) != 1 || !strings.Contains(string(acq.Tasks[0].Data), `"DEPLOY_KEY":"hunter2"`) {
		t.Fatalf("the acquiring delegate gets %+v", acq.Tasks)
	}
}
