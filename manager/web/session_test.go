package web

import "testing"

func TestPrincipalMay(t *testing.T) {
	for _, c := range []struct {
		role            Role
		view, op, admin bool
	}{
		{RoleViewer, true, false, false},
		{RoleOperator, true, true, false},
		{RoleAdmin, true, true, true},
		{"", false, false, false},
		{"root", false, false, false},
	} {
		p := Principal{Name: "u", Role: c.role}
		if got := [3]bool{p.May(RoleViewer), p.CanOperate(), p.CanAdminister()}; got != [3]bool{c.view, c.op, c.admin} {
			t.Errorf("%q: viewer/operator/admin = %v, want %v", c.role, got, [3]bool{c.view, c.op, c.admin})
		}
	}
}

func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{
		"/ui/runs/1?x=1":          "/ui/runs/1?x=1",
		"":                        "/",
		"https://evil.example/ui": "/",
		"//evil.example/ui/":      "/",
		"/api/v1/tasks":           "/",
		"/ui/../api":              "/",
		"/ui/tasks/":              "/ui/tasks/",
		"/\\evil.example":         "/",
	} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}
