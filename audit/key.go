package audit

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// VKeyFile is the name, in a log's directory, of the file holding the
// checkpoint verifier key (note.Verifier text form). A verifier SHOULD pin
// the key it trusts rather than read it from the log it checks.
const VKeyFile = "log.vkey"

// GenerateKey returns a new Ed25519 checkpoint key named origin (the
// checkpoint's origin line), as note signer and verifier key texts.
func GenerateKey(origin string) (skey, vkey string, err error) {
	return note.GenerateKey(rand.Reader, origin)
}

// Origin is the checkpoint origin line of a Sigil audit log: issuer
// without its scheme, "/audit", and "/" node in a cluster (one log per
// node, spec.md §21.1).
func Origin(issuer, node string) string {
	o := issuer
	if i := strings.Index(o, "://"); i >= 0 {
		o = o[i+3:]
	}
	o = strings.TrimSuffix(o, "/") + "/audit"
	if node != "" {
		o += "/" + node
	}
	return strings.Map(func(r rune) rune {
		if r == '+' || r <= ' ' {
			return '_'
		}
		return r
	}, o)
}

// LoadOrCreateKey reads the checkpoint signer key from path, or creates it
// (mode 0600) named origin if the file does not exist. It also writes the
// verifier key to VKeyFile in dir, the log's directory, for readers.
func LoadOrCreateKey(path, origin, dir string) (note.Signer, note.Verifier, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		skey, vkey, gerr := GenerateKey(origin)
		if gerr != nil {
			return nil, nil, gerr
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, nil, err
		}
		f, ferr := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if ferr != nil {
			return nil, nil, ferr
		}
		if _, err := f.WriteString(skey + "\n" + vkey + "\n"); err != nil {
			f.Close()
			return nil, nil, err
		}
		if err := f.Close(); err != nil {
			return nil, nil, err
		}
		data = []byte(skey + "\n" + vkey + "\n")
	} else if err != nil {
		return nil, nil, err
	}
	// The file holds the signer key, then the verifier key.
	lines := strings.Fields(string(data))
	if len(lines) != 2 {
		return nil, nil, fmt.Errorf("audit key %s: want a signer key line and a verifier key line", path)
	}
	signer, err := note.NewSigner(lines[0])
	if err != nil {
		return nil, nil, fmt.Errorf("audit key %s: %w", path, err)
	}
	vkey := lines[1]
	verifier, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, nil, fmt.Errorf("audit key %s: %w", path, err)
	}
	if verifier.Name() != signer.Name() || verifier.KeyHash() != signer.KeyHash() {
		return nil, nil, fmt.Errorf("audit key %s: the verifier key is not the signer's", path)
	}
	if dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, VKeyFile), []byte(vkey+"\n"), 0o644); err != nil {
			return nil, nil, err
		}
	}
	return signer, verifier, nil
}
