package runtime

import (
	"errors"
	"testing"

	"github.com/errandci/errand"
)

func TestWorkingDir(t *testing.T) {
	cases := []struct {
		in, want string
		invalid  bool
	}{
		{"", "", false},
		{".", "", false},
		{"sub/dir", "sub/dir", false},
		{"./a//b/", "a/b", false},
		{"a/b/..", "a", false},
		{"a/../..", "", true},
		{"..", "", true},
		{"../x", "", true},
		{"/etc", "", true},
	}
	for _, tc := range cases {
		got, err := workingDir(tc.in)
		var e *errand.Error
		if tc.invalid != (err != nil) || err != nil && (!errors.As(err, &e) || e.Code != errand.CodeInvalid) || got != tc.want {
			t.Errorf("workingDir(%q) = %q, %v; want %q, invalid %v", tc.in, got, err, tc.want, tc.invalid)
		}
	}
}
