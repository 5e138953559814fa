package server_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/sigil-ws/sigil/server"
)

func TestUsersFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "users.json")
	a, err := server.HashPassword("s3cret-pass", "argon2id")
	must(t, err)
	b, err := server.HashPassword("other-pass", "bcrypt")
	must(t, err)
	doc := &server.UsersDoc{Users: []server.User{{Name: "alice", Hash: a, Roles: []string{"user"}}, {Name: "bob", Hash: b}}}
	must(t, server.WriteUsersFile(path, doc))
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatal("users file mode")
	}
	u, err := server.NewUsersFile(path)
	must(t, err)
	ctx := context.Background()
	id, err := u.Authenticate(ctx, server.Credentials{GrantType: "password", Username: "alice", Password: "s3cret-pass"})
	if err != nil || id.Subject != "alice" || id.Roles[0] != "user" {
		t.Fatal(id, err)
	}
	if _, err := u.Authenticate(ctx, server.Credentials{GrantType: "password", Username: "bob", Password: "other-pass"}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []server.Credentials{{GrantType: "password", Username: "alice", Password: "nope"}, {GrantType: "password", Username: "zed", Password: "x"}} {
		if _, err := u.Authenticate(ctx, c); err != server.ErrInvalidCredentials {
			t.Fatal(err)
		}
	}
	if _, err := u.Authenticate(ctx, server.Credentials{GrantType: "external"}); err != server.ErrUnsupportedGrant {
		t.Fatal(err)
	}
	bad := []string{
		`{"users":[{"name":"a","hash":"x","roles":[]}]}`,
		`{"users":[{"name":"a b","hash":"` + b + `","roles":[]}]}`,
		`{"users":[{"name":"a","hash":"` + b + `","roles":[]},{"name":"a","hash":"` + b + `","roles":[]}]}`,
		`{"users":[],"users":[]}`,
		`{"users":[{"name":"server","hash":"` + b + `","roles":[]}]}`,
		`{"users":[{"name":"a","Name":"b","hash":"` + b + `","roles":[]}]}`,
		`{"users":[{"name":"a","hash":"` + b + `","roles":[],"admin":true}]}`,
		`{"users":[{"name":"a","hash":"$argon2id$v=19$m=99999999,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA","roles":[]}]}`,
		`{}`,
		`{"users":null}`,
		`{"Users":[]}`,
		`{"users":[],"admins":[]}`,
		`[]`,
	}
	for i, s := range bad {
		if _, err := server.ParseUsers([]byte(s)); err == nil {
			t.Errorf("bad users file %d accepted", i)
		}
	}
}

// FuzzParseUsers: the users-file parser never panics, and what it accepts
// survives a Marshal/Parse round trip unchanged.
func FuzzParseUsers(f *testing.F) {
	f.Add([]byte(`{"users":[{"name":"alice","hash":"$2a$04$abcdefghijklmnopqrstuuAbCdEfGhIjKlMnOpQrStUvWxYz01234","roles":["user"]}]}`))
	f.Add([]byte(`{"users":[{"name":"a","hash":"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g","roles":[]}]}`))
	f.Add([]byte(`{"users":[]}`))
	f.Add([]byte(`{"users":[{"name":"a","name":"b"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		doc, err := server.ParseUsers(data)
		if err != nil {
			return
		}
		out, err := doc.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		doc2, err := server.ParseUsers(out)
		if err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		out2, _ := doc2.Marshal()
		if string(out) != string(out2) {
			t.Fatal("round trip changed the document")
		}
	})
}
