package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/sigil-ws/sigil/internal/strictjson"
	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
)

// Limits of serve's settings: a value outside them is refused at start.
const (
	// minMaxFrame fits a hello with the largest session token (4,096
	// bytes, spec.md §4.2), its key and an encryption key, in base64url.
	minMaxFrame = 8 << 10
	maxMaxFrame = 16 << 20
)

// checkServeFlags refuses values that cannot work: lifetimes and timeouts
// that are zero or negative, a max-frame too small for a hello, unknown
// log formats, origins that are not origins.
func checkServeFlags(f *serveFlags) error {
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"token-ttl", f.tokenTTL}, {"refresh-ttl", f.refreshTTL}, {"shutdown-timeout", f.shutdownTimeout},
		{"read-header-timeout", f.http.ReadHeaderTimeout}, {"read-timeout", f.http.ReadTimeout},
		{"write-timeout", f.http.WriteTimeout}, {"idle-timeout", f.http.IdleTimeout}} {
		if d.v <= 0 {
			return fmt.Errorf("--%s %v: must be more than zero", d.name, d.v)
		}
	}
	if f.maxFrame < minMaxFrame || f.maxFrame > maxMaxFrame {
		return fmt.Errorf("--max-frame %d: must be between %d (a hello with the largest token) and %d bytes", f.maxFrame, minMaxFrame, maxMaxFrame)
	}
	if f.http.MaxHeaderBytes < 0 {
		return fmt.Errorf("--max-header-bytes %d: must be 0 (the default) or more", f.http.MaxHeaderBytes)
	}
	if f.maxFamilies <= 0 {
		return fmt.Errorf("--max-refresh-families %d: must be at least 1", f.maxFamilies)
	}
	if least := int(server.PasswordCheckMemory >> 20); f.hashMemoryMiB < least {
		return fmt.Errorf("--password-hash-memory %d: must be at least %d (MiB of one password check)", f.hashMemoryMiB, least)
	}
	if f.logFormat != "text" && f.logFormat != "json" {
		return fmt.Errorf("--log-format %q: want text or json", f.logFormat)
	}
	for _, o := range splitList(f.origins) {
		if err := checkOrigin(o); err != nil {
			return fmt.Errorf("--origins: %w", err)
		}
	}
	return nil
}

// serveFlagWarnings finds settings that work but are probably not meant.
func serveFlagWarnings(f *serveFlags) []string {
	var out []string
	if f.refreshTTL < f.tokenTTL {
		out = append(out, fmt.Sprintf("--refresh-ttl %v is shorter than --token-ttl %v: no session can refresh", f.refreshTTL, f.tokenTTL))
	}
	return out
}

// checkOrigin accepts "*" and scheme://host[:port] with scheme http or
// https, as browsers send Origin (no path, query or user).
func checkOrigin(o string) error {
	if o == "*" {
		return nil
	}
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("%q is not an origin: want https://host[:port] (or http://), or * for development", o)
	}
	return nil
}

// fileError says which setting a file belongs to and, for a JSON error,
// where in the file: "--policy policy.json:3:14: …".
func fileError(setting, path string, data []byte, err error) error {
	var je *strictjson.Error
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	off := -1
	switch {
	case errors.As(err, &je):
		off = je.Offset
	case errors.As(err, &se):
		off = int(se.Offset)
	case errors.As(err, &te):
		off = int(te.Offset)
	}
	if off >= 0 && off <= len(data) {
		line := 1 + bytes.Count(data[:off], []byte("\n"))
		col := 1 + off - (bytes.LastIndexByte(data[:off], '\n') + 1)
		return fmt.Errorf("%s %s:%d:%d: %w", setting, path, line, col, err)
	}
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s %s: no such file", setting, path)
	}
	return fmt.Errorf("%s %s: %w", setting, path, err)
}

// readPolicy reads and checks the --policy file.
func readPolicy(path string) (*protocol.Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fileError("--policy", path, nil, err)
	}
	p, err := protocol.ParsePolicy(data)
	if err != nil {
		return nil, fileError("--policy", path, data, err)
	}
	return p, nil
}

// builtinActions are the client actions of spec.md §9.1 a policy names
// (application actions have a dot).
var builtinActions = []string{"*", protocol.ActSub, protocol.ActUnsub, protocol.ActPub, protocol.ActDM,
	protocol.ActPing, protocol.ActRefresh, protocol.ActPresence, protocol.ActHistory}

// policyWarnings finds what in a policy is probably a typo: an action
// without a dot that is not built-in (no handler can serve it), and, when
// every role comes from the users file (no external grant), a role no user
// holds. They are warnings, not errors: the policy still loads, as an
// operator may grant a role before giving it to anyone.
func policyWarnings(p *protocol.Policy, users *server.UsersDoc, external bool) []string {
	var out []string
	held := map[string]bool{}
	if users != nil {
		for _, u := range users.Users {
			for _, r := range u.Roles {
				held[r] = true
			}
		}
	}
	seen := map[string]bool{}
	for i, r := range p.Rules() {
		if !strings.Contains(r.Action, ".") && !slices.Contains(builtinActions, r.Action) && !seen["a"+r.Action] {
			seen["a"+r.Action] = true
			out = append(out, fmt.Sprintf("rule %d: action %q is not a built-in action (%s) nor an application action (with a dot)", i, r.Action, strings.Join(builtinActions[1:], ", ")))
		}
		if users == nil || external {
			continue
		}
		for _, role := range r.Roles {
			if !held[role] && !seen["r"+role] {
				seen["r"+role] = true
				out = append(out, fmt.Sprintf("rule %d: role %q is held by no user of the users file", i, role))
			}
		}
	}
	return out
}

// readUsers reads the --users file for its checks; the server reads it
// again (server.NewUsersFile) and follows its changes.
func readUsers(path string) (*server.UsersDoc, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fileError("--users", path, nil, err)
	}
	doc, err := server.ParseUsers(data)
	if err != nil {
		return nil, fileError("--users", path, data, err)
	}
	return doc, nil
}

// warnReadable warns when a secret file is readable by others.
func warnReadable(w io.Writer, what, path string) {
	if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 != 0 {
		fmt.Fprintf(w, "warning: %s %s is readable by others (mode %v): chmod 600 %s\n", what, path, st.Mode().Perm(), path)
	}
}

// logWarnings logs each warning.
func logWarnings(log *slog.Logger, what string, ws []string) {
	for _, w := range ws {
		log.Warn(what + ": " + w)
	}
}
