package main

import (
	"strings"
	"testing"
)

// TestHelpAndUsage runs the binary as a user would: -h exits 0 with the
// command's arguments and no "flag: help requested"; an unknown command
// says so; --version prints one; flags that do not apply are refused.
func TestHelpAndUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		code int
		want []string
	}{
		{[]string{"-h"}, 0, []string{"sigil serve", "sigil login"}},
		{[]string{"--version"}, 0, []string{"sigil "}},
		{[]string{"version"}, 0, []string{"sigil "}},
		{[]string{"frob"}, 2, []string{`unknown command "frob"`, "usage:"}},
		{[]string{}, 2, []string{"usage:"}},
		{[]string{"send", "-h"}, 0, []string{"usage: sigil send [flags] CHANNEL|@USER MESSAGE", "--stdin [flags] CHANNEL|@USER", "-credentials"}},
		{[]string{"help", "listen"}, 0, []string{"usage: sigil listen [flags] CHANNEL", "-count"}},
		{[]string{"login", "--help"}, 0, []string{"usage: sigil login --server URL --user NAME"}},
		{[]string{"verify", "-h"}, 0, []string{"usage: sigil verify --jwks FILE|URL [--json] [FILE]"}},
		{[]string{"keygen", "-h"}, 0, []string{"usage: sigil keygen"}},
		{[]string{"user", "add", "-h"}, 0, []string{"usage: sigil user add", "NAME", "-roles"}},
		{[]string{"user", "-h"}, 0, []string{"sigil user remove [--users FILE] NAME"}},
		{[]string{"serve", "-h"}, 0, []string{"-addr"}},
		{[]string{"user", "remove", "--roles", "admin", "bob"}, 2, []string{"--roles does not apply to user remove", "usage: sigil user remove"}},
		{[]string{"user", "passwd", "--roles", "admin", "bob"}, 2, []string{"--roles does not apply to user passwd"}},
		{[]string{"user", "frob", "bob"}, 2, []string{`unknown operation "frob"`}},
		{[]string{"user"}, 2, []string{"add, passwd or remove"}},
		{[]string{"send", "rooms.x"}, 2, []string{"send takes CHANNEL MESSAGE", "usage: sigil send"}},
		{[]string{"send", "@", "hi"}, 2, []string{"the user is missing after @", "usage: sigil send"}},
		{[]string{"listen"}, 2, []string{"listen takes one CHANNEL"}},
		{[]string{"login", "--server", "http://127.0.0.1:1"}, 2, []string{"login needs --server and --user"}},
		{[]string{"keygen", "extra"}, 2, []string{"keygen takes no arguments"}},
		{[]string{"serve", "extra"}, 2, []string{"serve takes no arguments"}},
		{[]string{"audit", "-h"}, 0, []string{"sigil audit verify", "sigil audit export"}},
		{[]string{"audit", "frob"}, 2, []string{`unknown subcommand "frob"`}},
		{[]string{"audit"}, 2, []string{"a subcommand is required"}},
	} {
		out, err := sigilExit(t, c.args...)
		code := 0
		if err != nil {
			code = -1
			if ee, ok := err.(interface{ ExitCode() int }); ok {
				code = ee.ExitCode()
			}
		}
		if code != c.code || strings.Contains(out, "flag: help requested") {
			t.Errorf("sigil %v: exit %d, want %d:\n%s", c.args, code, c.code, out)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("sigil %v: output lacks %q:\n%s", c.args, w, out)
			}
		}
	}
}
