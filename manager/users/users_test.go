package users

import (
	"testing"

	"github.com/errandci/errand"
	"github.com/errandci/errand/manager/store"
)

func TestCheckRole(t *testing.T) {
	viewer := Actor{Name: "vera", Role: store.RoleViewer}
	operator := Actor{Name: "olga", Role: store.RoleOperator}
	tests := []struct {
		a    Actor
		need store.Role
		want string // "" for allowed, else the reason
	}{
		{viewer, store.RoleViewer, ""},
		{viewer, store.RoleOperator, "this needs the operator role; vera is a viewer"},
		{operator, store.RoleOperator, ""},
		{operator, store.RoleAdmin, "this needs the admin role; olga is an operator"},
		{Bootstrap, store.RoleAdmin, ""},
		{Actor{Name: "x"}, store.RoleViewer, "this needs the viewer role"},
	}
	for _, tt := range tests {
		err := CheckRole(tt.a, tt.need)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s needs %s: %v, want allowed", tt.a.Name, tt.need, err)
		case tt.want != "" && (errand.ErrorCode(err) != errand.CodeForbidden || err.(*errand.Error).Reason != tt.want):
			t.Errorf("%s needs %s: %v, want forbidden: %s", tt.a.Name, tt.need, err, tt.want)
		}
	}
}

func TestOwner(t *testing.T) {
	viewer := Actor{Name: "vera", Role: store.RoleViewer}
	admin := Actor{Name: "ada", Role: store.RoleAdmin}
	tests := []struct {
		a    Actor
		user string
		want string
		code string
	}{
		{viewer, "", "vera", ""},
		{viewer, "vera", "vera", ""},
		{viewer, "ada", "", errand.CodeForbidden},
		{admin, "vera", "vera", ""},
		{Bootstrap, "", "", errand.CodeInvalid},
		{Bootstrap, "vera", "vera", ""},
	}
	for _, tt := range tests {
		got, err := owner(tt.a, tt.user)
		if got != tt.want || errand.ErrorCode(err) != tt.code && !(tt.code == "" && err == nil) {
			t.Errorf("owner(%s, %q) = %q, %v; want %q, code %q", tt.a.Name, tt.user, got, err, tt.want, tt.code)
		}
	}
}

func TestTokenFormat(t *testing.T) {
	id, tok, err := newToken()
	if err != nil {
		t.Fatal(err)
	}
	if len(tok) != len("eu_")+len(id)+1+64 || tok[:3+len(id)+1] != "eu_"+id+"_" {
		t.Errorf("token %q of id %q", tok, id)
	}
	if !equalHash(hashToken(tok), hashToken(tok)) || equalHash(hashToken(tok), hashToken(tok+"x")) || equalHash(hashToken(tok), "") {
		t.Error("equalHash does not tell hashes apart")
	}
}
