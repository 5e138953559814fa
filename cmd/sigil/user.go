package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/sigil-ws/sigil/server"
)

func userCmd(args []string, stdin io.Reader, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("user: add, passwd or remove")
	}
	op := args[0]
	fs := flag.NewFlagSet("user "+op, flag.ContinueOnError)
	users := fs.String("users", envOr("SIGIL_USERS", "sigil-data/users.json"), "users file")
	roles := fs.String("roles", "user", "comma-separated roles (add)")
	hash := fs.String("hash", "argon2id", "argon2id or bcrypt")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("user: exactly one NAME is required")
	}
	name := fs.Arg(0)
	doc := &server.UsersDoc{}
	data, err := os.ReadFile(*users)
	switch {
	case err == nil:
		if doc, err = server.ParseUsers(data); err != nil {
			return err
		}
	case errors.Is(err, os.ErrNotExist) && op == "add":
	default:
		return err
	}
	readPassword := func() (string, error) {
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", err
		}
		pw := strings.TrimRight(line, "\r\n")
		if len(pw) < 8 {
			return "", errors.New("the password (read from stdin) must have at least 8 characters")
		}
		return pw, nil
	}
	switch op {
	case "add":
		if _, exists := doc.Lookup(name); exists {
			return fmt.Errorf("user %q exists (use passwd)", name)
		}
		pw, err := readPassword()
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
		pw, err := readPassword()
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
