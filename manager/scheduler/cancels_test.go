package scheduler

import (
	"fmt"
	"testing"
	"time"
)

// The delivery of cancels, one table of event sequences: each step
// applies an event at a time (seconds from t0) and checks what a
// delegate would be answered then.
func TestCancelDelivery(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	type step struct {
		at     float64 // seconds after t0
		event  string  // ask, ended, tell, replace
		tasks  []string
		want   []string // pending cancels after the event
		untold bool
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"nothing pending", []step{{at: 0, event: "tell", tasks: []string{"a"}, want: nil, untold: false}}},
		{"asked is untold", []step{{at: 0, event: "ask", tasks: []string{"a"}, want: []string{"a"}, untold: true}}},
		{"told is told", []step{
			{at: 0, event: "ask", tasks: []string{"a"}, want: []string{"a"}, untold: true},
			{at: 0, event: "tell", tasks: []string{"a"}, want: []string{"a"}, untold: false},
		}},
		{"told again after RetellAfter", []step{
			{at: 0, event: "ask", tasks: []string{"a"}, want: []string{"a"}, untold: true},
			{at: 0, event: "tell", tasks: []string{"a"}, want: []string{"a"}, untold: false},
			{at: 0.5, event: "tell", tasks: nil, want: []string{"a"}, untold: false},
			{at: 1, event: "tell", tasks: nil, want: []string{"a"}, untold: true},
			{at: 1, event: "tell", tasks: []string{"a"}, want: []string{"a"}, untold: false},
		}},
		{"asking again keeps told", []step{
			{at: 0, event: "ask", tasks: []string{"a"}, want: []string{"a"}, untold: true},
			{at: 0, event: "tell", tasks: []string{"a"}, want: []string{"a"}, untold: false},
			{at: 0, event: "ask", tasks: []string{"a"}, want: []string{"a"}, untold: false},
		}},
		{"one untold among told", []step{
			{at: 0, event: "ask", tasks: []string{"b", "a"}, want: []string{"a", "b"}, untold: true},
			{at: 0, event: "tell", tasks: []string{"a", "b"}, want: []string{"a", "b"}, untold: false},
			{at: 0, event: "ask", tasks: []string{"c"}, want: []string{"a", "b", "c"}, untold: true},
		}},
		{"ended drops", []step{
			{at: 0, event: "ask", tasks: []string{"a", "b"}, want: []string{"a", "b"}, untold: true},
			{at: 0, event: "tell", tasks: []string{"a", "b"}, want: []string{"a", "b"}, untold: false},
			{at: 0, event: "ended", tasks: []string{"a"}, want: []string{"b"}, untold: false},
			{at: 0, event: "ended", tasks: []string{"b"}, want: nil, untold: false},
		}},
		{"ended then asked again is untold", []step{
			{at: 0, event: "ask", tasks: []string{"a"}, want: []string{"a"}, untold: true},
			{at: 0, event: "tell", tasks: []string{"a"}, want: []string{"a"}, untold: false},
			{at: 0, event: "ended", tasks: []string{"a"}, want: nil, untold: false},
			{at: 0, event: "ask", tasks: []string{"a"}, want: []string{"a"}, untold: true},
		}},
		{"replace adds missed cancels untold", []step{
			{at: 0, event: "replace", tasks: []string{"a"}, want: []string{"a"}, untold: true},
		}},
		{"replace keeps told state of known", []step{
			{at: 0, event: "ask", tasks: []string{"a"}, want: []string{"a"}, untold: true},
			{at: 0, event: "tell", tasks: []string{"a"}, want: []string{"a"}, untold: false},
			{at: 0, event: "replace", tasks: []string{"a"}, want: []string{"a"}, untold: false},
		}},
		{"replace drops told not stored, keeps untold", []step{
			{at: 0, event: "ask", tasks: []string{"a"}, want: []string{"a"}, untold: true},
			{at: 0, event: "tell", tasks: []string{"a"}, want: []string{"a"}, untold: false},
			{at: 0, event: "ask", tasks: []string{"b"}, want: []string{"a", "b"}, untold: true},
			{at: 0, event: "replace", tasks: nil, want: []string{"b"}, untold: true},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var c cancels
			for i, st := range tc.steps {
				now := t0.Add(time.Duration(st.at * float64(time.Second)))
				switch st.event {
				case "ask":
					for _, task := range st.tasks {
						c.ask(task)
					}
				case "ended":
					for _, task := range st.tasks {
						c.ended(task)
					}
				case "tell":
					c.tell(st.tasks, now)
				case "replace":
					c.replace(st.tasks)
				default:
					t.Fatalf("unknown event %q", st.event)
				}
				got, untold := c.pending(now)
				if fmt.Sprint(got) != fmt.Sprint(st.want) || untold != st.untold {
					t.Fatalf("step %d (%s %v at %gs): pending %v untold %v, want %v untold %v",
						i, st.event, st.tasks, st.at, got, untold, st.want, st.untold)
				}
			}
		})
	}
}

// replace returns the told cancels it dropped, so that the cache can
// forget whom their tasks belonged to.
func TestCancelReplaceReturnsDropped(t *testing.T) {
	var c cancels
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	c.ask("a")
	c.ask("b")
	c.tell([]string{"a"}, now)
	if dropped := c.replace([]string{"c"}); fmt.Sprint(dropped) != "[a]" {
		t.Fatalf("dropped %v, want [a]", dropped)
	}
	if got, _ := c.pending(now); fmt.Sprint(got) != "[b c]" {
		t.Fatalf("pending %v, want [b c]", got)
	}
}
