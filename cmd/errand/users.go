package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/errandci/errand/client"
)

func init() { commands = append(commands, addUsersCommand, addTokensCommand, addAuditCommand) }

func addAuditCommand(app *kingpin.Application, g *globals) {
	cmd := app.Command("audit", "Show the audit trail, newest first: cancels, approvals, delegates drained or removed, user and token changes (the admin role).")
	cf := addClientFlags(cmd)
	var before int64
	var limit int
	cmd.Flag("before", "Entries older than this id (paging: the id of the last entry shown).").Envar("ERRAND_AUDIT_BEFORE").Int64Var(&before)
	cmd.Flag("limit", "At most this many entries.").Envar("ERRAND_LIMIT").Default("50").IntVar(&limit)
	cmd.Action(g.action(func(ctx context.Context) error {
		l, err := cf.client().ListAudit(ctx, before, limit)
		if err != nil {
			return err
		}
		if cf.output == "json" {
			for _, e := range l.Entries {
				e.At = e.At.UTC()
			}
			return printJSON(g.Stdout, l)
		}
		rows := make([][]string, len(l.Entries))
		for i, e := range l.Entries {
			rows[i] = []string{strconv.FormatInt(e.ID, 10), localStamp(&e.At), e.Actor, e.Action, dash(e.Target), dash(e.Detail)}
		}
		return table(g.Stdout, []string{"ID", "AT", "ACTOR", "ACTION", "TARGET", "DETAIL"}, rows)
	}))
}

func addUsersCommand(app *kingpin.Application, g *globals) {
	cmd := app.Command("users", "Create, list and delete users (the admin role).")
	cf := addClientFlags(cmd)

	create := cmd.Command("create", "Create a user with a role: viewer (reads runs, tasks, logs, delegates), operator (also submits, cancels, approves) or admin (also users, tokens, delegates, the audit trail).")
	createName := create.Arg("name", "User name.").Required().String()
	var role string
	create.Flag("role", "The user's role: viewer, operator or admin.").Envar("ERRAND_USER_ROLE").
		Default("viewer").EnumVar(&role, "viewer", "operator", "admin")
	create.Action(g.action(func(ctx context.Context) error {
		u, err := cf.client().CreateUser(ctx, &client.UserRequest{Name: *createName, Role: role})
		if err != nil {
			return err
		}
		return cf.print(g.Stdout, utcUser(u), func() error {
			_, err := fmt.Fprintf(g.Stdout, "created: %s (%s); give them a token with: errand tokens create NAME --user %s\n", u.Name, u.Role, u.Name)
			return err
		})
	}))

	list := cmd.Command("list", "List users in name order.").Alias("ls")
	var disabled bool
	list.Flag("disabled", "List disabled (deleted) users too.").Envar("ERRAND_USERS_DISABLED").BoolVar(&disabled)
	list.Action(g.action(func(ctx context.Context) error {
		l, err := cf.client().ListUsers(ctx, disabled)
		if err != nil {
			return err
		}
		if cf.output == "json" {
			for _, u := range l.Users {
				utcUser(u)
			}
			return printJSON(g.Stdout, l)
		}
		rows := make([][]string, len(l.Users))
		for i, u := range l.Users {
			rows[i] = []string{u.Name, u.Role, localStamp(&u.CreatedAt), localStamp(u.DisabledAt)}
		}
		return table(g.Stdout, []string{"NAME", "ROLE", "CREATED", "DISABLED"}, rows)
	}))

	del := cmd.Command("delete", "Delete a user: they are disabled and every token of theirs is revoked; the name stays taken.").Alias("rm")
	delName := del.Arg("name", "User name.").Required().String()
	del.Action(g.action(func(ctx context.Context) error {
		u, err := cf.client().DeleteUser(ctx, *delName)
		if err != nil {
			return err
		}
		return cf.print(g.Stdout, utcUser(u), func() error {
			_, err := fmt.Fprintf(g.Stdout, "deleted: %s (tokens revoked)\n", u.Name)
			return err
		})
	}))
}

func addTokensCommand(app *kingpin.Application, g *globals) {
	cmd := app.Command("tokens", "Create, list and revoke API tokens: your own, or with --user another user's (the admin role; the bootstrap admin token always names --user).")
	cf := addClientFlags(cmd)

	create := cmd.Command("create", "Create a token and print it, once: it is never shown again.")
	createName := create.Arg("name", "What the token is for (a laptop, a CI system).").Required().String()
	var createUser string
	var expires time.Duration
	create.Flag("user", "The token's owner (default: the caller).").Envar("ERRAND_TOKEN_USER").StringVar(&createUser)
	create.Flag("expires", "The token expires after this long (720h for 30 days; default: never).").Envar("ERRAND_TOKEN_EXPIRES").DurationVar(&expires)
	create.Action(g.action(func(ctx context.Context) error {
		req := &client.TokenRequest{Name: *createName, User: createUser}
		if expires < 0 {
			return fmt.Errorf("--expires: %s is not a positive duration", expires)
		}
		if expires > 0 {
			req.ExpiresIn = expires.String()
		}
		tk, err := cf.client().CreateToken(ctx, req)
		if err != nil {
			return err
		}
		return cf.print(g.Stdout, utcToken(tk), func() error {
			fmt.Fprintf(g.Stderr, "The token is shown this once; keep it (ERRAND_TOKEN=…).\n")
			return fields(g.Stdout, [][2]string{{"ID", tk.ID}, {"User", tk.User}, {"Name", tk.Name},
				{"Expires", localTimePtr(tk.ExpiresAt)}, {"Token", tk.Secret}})
		})
	}))

	list := cmd.Command("list", "List tokens, oldest first: name, created, expires, last used; never the secret.").Alias("ls")
	var listUser string
	var revoked bool
	list.Flag("user", "Whose tokens (default: yours; an admin sees everyone's).").Envar("ERRAND_TOKEN_USER").StringVar(&listUser)
	list.Flag("revoked", "List revoked tokens too.").Envar("ERRAND_TOKENS_REVOKED").BoolVar(&revoked)
	list.Action(g.action(func(ctx context.Context) error {
		l, err := cf.client().ListTokens(ctx, listUser, revoked)
		if err != nil {
			return err
		}
		if cf.output == "json" {
			for _, tk := range l.Tokens {
				utcToken(tk)
			}
			return printJSON(g.Stdout, l)
		}
		rows := make([][]string, len(l.Tokens))
		for i, tk := range l.Tokens {
			rows[i] = []string{tk.ID, tk.User, tk.Name, localStamp(&tk.CreatedAt), localStamp(tk.ExpiresAt),
				localStamp(tk.LastUsedAt), localStamp(tk.RevokedAt)}
		}
		return table(g.Stdout, []string{"ID", "USER", "NAME", "CREATED", "EXPIRES", "LAST USED", "REVOKED"}, rows)
	}))

	revoke := cmd.Command("revoke", "Revoke a token, named by its id, or by its name among a user's tokens.")
	revokeID := revoke.Arg("token", "Token id or name.").Required().String()
	var revokeUser string
	revoke.Flag("user", "Whose token a name refers to (default: yours).").Envar("ERRAND_TOKEN_USER").StringVar(&revokeUser)
	revoke.Action(g.action(func(ctx context.Context) error {
		c := cf.client()
		id, err := tokenID(ctx, c, *revokeID, revokeUser)
		if err != nil {
			return err
		}
		tk, err := c.RevokeToken(ctx, id)
		if err != nil {
			return err
		}
		return cf.print(g.Stdout, utcToken(tk), func() error {
			_, err := fmt.Fprintf(g.Stdout, "revoked: %s (%s of %s)\n", tk.ID, tk.Name, tk.User)
			return err
		})
	}))
}

// tokenID resolves a token named by id or by its name among user's
// live tokens; a name that two tokens share is refused.
func tokenID(ctx context.Context, c *client.HTTP, ref, user string) (string, error) {
	l, err := c.ListTokens(ctx, user, false)
	if err != nil {
		return "", err
	}
	var byName []string
	for _, tk := range l.Tokens {
		if tk.ID == ref {
			return ref, nil
		}
		if tk.Name == ref {
			byName = append(byName, tk.ID)
		}
	}
	switch len(byName) {
	case 0:
		return ref, nil // the manager says whether it exists
	case 1:
		return byName[0], nil
	}
	return "", fmt.Errorf("%d tokens are named %s: revoke one by its id (errand tokens list)", len(byName), ref)
}

func utcUser(u *client.User) *client.User {
	u.CreatedAt = u.CreatedAt.UTC()
	u.DisabledAt = utcPtr(u.DisabledAt)
	return u
}

func utcToken(t *client.Token) *client.Token {
	t.CreatedAt = t.CreatedAt.UTC()
	t.ExpiresAt, t.LastUsedAt, t.RevokedAt = utcPtr(t.ExpiresAt), utcPtr(t.LastUsedAt), utcPtr(t.RevokedAt)
	return t
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}
