package storetest

import (
	"strings"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

// testRunCreatedBy: who made a run is kept with it, shown by RunGet and by
// RunList, summaries included; a name past the bound is refused.
func testRunCreatedBy(h *harness) {
	h.createRun(&store.Run{ID: "01A", CreatedBy: "alice"}, task("a1"))
	h.createRun(&store.Run{ID: "01B"})
	if got := h.getRun("01A").CreatedBy; got != "alice" {
		h.t.Fatalf("RunGet created_by = %q, want alice", got)
	}
	if got := h.getRun("01B").CreatedBy; got != "" {
		h.t.Fatalf("RunGet created_by of a run made by nobody = %q, want empty", got)
	}
	for _, summary := range []bool{false, true} {
		runs, err := h.s.RunList(h.ctx, store.RunListParams{Summary: summary})
		if err != nil {
			h.t.Fatalf("RunList: %v", err)
		}
		by := map[string]string{}
		for _, r := range runs {
			by[r.ID] = r.CreatedBy
		}
		if by["01A"] != "alice" || by["01B"] != "" {
			h.t.Fatalf("RunList (summary %v) created_by = %v, want 01A alice, 01B empty", summary, by)
		}
	}
	_, err := h.s.RunCreate(h.ctx, store.RunCreateParams{Run: &store.Run{ID: "01C",
		CreatedBy: strings.Repeat("x", store.MaxRunCreatedBy+1)}, Now: h.now})
	wantCode(h.t, "RunCreate with a long created_by", err, errand.ErrInvalid)
}
