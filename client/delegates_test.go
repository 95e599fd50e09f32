package client

import (
	"fmt"
	"net/http"
	"strconv"
	"testing"

	"github.com/errandci/errand/httphelper"
)

// ListDelegates reads every page the manager answers, following next.
func TestListDelegatesFollowsPages(t *testing.T) {
	const total, pageSize = 2500, 1000
	calls := 0
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		start := 0
		if a := r.URL.Query().Get("after"); a != "" {
			n, err := strconv.Atoi(a)
			if err != nil {
				t.Errorf("after = %q", a)
			}
			start = n + 1
		}
		page := &DelegateList{Kind: "delegate_list", ManagerID: "m1"}
		for i := start; i < min(start+pageSize, total); i++ {
			page.Items = append(page.Items, &Delegate{ID: fmt.Sprint(i)})
		}
		if start+pageSize < total {
			page.Next = fmt.Sprint(start + pageSize - 1)
		}
		httphelper.WriteJSON(w, page, http.StatusOK)
	})
	l, err := New("http://manager.invalid", "tok", WithHandler(h)).ListDelegates(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Items) != total || calls != 3 || l.ManagerID != "m1" {
		t.Fatalf("%d delegates in %d calls (manager %q), want %d in 3", len(l.Items), calls, l.ManagerID, total)
	}
	for i, d := range l.Items {
		if d.ID != fmt.Sprint(i) {
			t.Fatalf("item %d is %s", i, d.ID)
		}
	}
}
