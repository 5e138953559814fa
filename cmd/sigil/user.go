package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/sigil-ws/sigil/server"
)

// userOps are the user subcommands: their synopsis and the flags that
// apply to each.
var userOps = map[string]struct {
	synopsis, about string
	flags           []string
}{
	"add":    {"[--users FILE] [--roles R1,R2] [--hash argon2id|bcrypt] NAME", "Adds a user; the password is asked for without echo on a terminal, or read from the first line of stdin (8 characters or more).", []string{"users", "roles", "hash"}},
	"passwd": {"[--users FILE] [--hash argon2id|bcrypt] NAME", "Sets a user's password, read as for add.", []string{"users", "hash"}},
	"remove": {"[--users FILE] NAME", "Removes a user.", []string{"users"}},
}

const userUsage = `usage: sigil user add [--users FILE] [--roles R1,R2] [--hash argon2id|bcrypt] NAME
       sigil user passwd [--users FILE] [--hash argon2id|bcrypt] NAME
       sigil user remove [--users FILE] NAME
Run "sigil user OP -h" for the flags.
`

func userCmd(args []string, stdin io.Reader, stdout io.Writer) error {
	if len(args) == 0 {
		return &usageError{msg: "user needs an operation: add, passwd or remove\n" + userUsage}
	}
	op := args[0]
	if op == "-h" || op == "--help" || op == "help" {
		fmt.Fprint(stdout, userUsage)
		return nil
	}
	spec, ok := userOps[op]
	if !ok {
		return &usageError{msg: fmt.Sprintf("user: unknown operation %q\n%s", op, userUsage)}
	}
	fs := newFlagSet("user "+op, spec.synopsis, spec.about)
	users := fs.String("users", envOr("SIGIL_USERS", "sigil-data/users.json"), "users file; env SIGIL_USERS")
	roles := fs.String("roles", "user", "comma-separated roles")
	hash := fs.String("hash", "argon2id", "password hash: argon2id or bcrypt")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if err := onlyFlags(fs, "user "+op, spec.flags...); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return badUsage(fs, "user %s takes exactly one NAME, got %d arguments", op, fs.NArg())
	}
	name := fs.Arg(0)
	doc := &server.UsersDoc{}
	data, err := os.ReadFile(*users)
	switch {
	case err == nil:
		if doc, err = server.ParseUsers(data); err != nil {
			return fileError("--users", *users, data, err)
		}
	case errors.Is(err, os.ErrNotExist) && op == "add":
	default:
		return fileError("--users", *users, nil, err)
	}
	newPassword := func() (string, error) {
		pw, err := readPassword(stdin, fmt.Sprintf("new password for %s: ", name), true)
		if err != nil {
			return "", err
		}
		if len(pw) < 8 {
			return "", fmt.Errorf("the password must have at least 8 characters (it has %d)", len(pw))
		}
		return pw, nil
	}
	switch op {
	case "add":
		if _, exists := doc.Lookup(name); exists {
			return fmt.Errorf("user %q exists (use passwd)", name)
		}
		pw, err := newPassword()
		if err != nil {
			return err
		}
		h, err := server.HashPassword(pw, *hash)
		if err != nil {
			return err
		}
		doc.Users = append(doc.Users, server.User{Name: name, Hash: h, Roles: splitList(*roles)})
	case "passwd":
		u, ok := doc.Lookup(name)
		if !ok {
			return fmt.Errorf("no user %q", name)
		}
		pw, err := newPassword()
		if err != nil {
			return err
		}
		if u.Hash, err = server.HashPassword(pw, *hash); err != nil {
			return err
		}
	case "remove":
		kept := doc.Users[:0]
		for _, u := range doc.Users {
			if u.Name != name {
				kept = append(kept, u)
			}
		}
		if len(kept) == len(doc.Users) {
			return fmt.Errorf("no user %q", name)
		}
		doc.Users = kept
	default:
		return fmt.Errorf("user: unknown operation %q", op)
	}
	// Validate what is written, as the server will read it.
	out, err := doc.Marshal()
	if err != nil {
		return err
	}
	if _, err := server.ParseUsers(out); err != nil {
		return err
	}
	if dir := dirOf(*users); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
	}
	if err := server.WriteUsersFile(*users, doc); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "user %s: %s done (%s)\n", name, op, *users)
	return nil
}

func dirOf(p string) string {
	i := strings.LastIndexByte(p, os.PathSeparator)
	if i <= 0 {
		return ""
	}
	return p[:i]
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
