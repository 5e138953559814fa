package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/sigil-ws/sigil/protocol"
)

// loadKeys loads the signing keys: the given files (oldest first), or the
// *.jwk files of dataDir/keys in name order, generating the first one on
// first start.
func loadKeys(files []string, dataDir string, stderr io.Writer) ([]*protocol.PrivateKey, error) {
	setting := "--key-files" // the setting the files come from, for errors
	if len(files) == 0 {
		setting = "--data-dir"
	}
	if len(files) == 0 {
		dir := filepath.Join(dataDir, "keys")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		var err error
		if files, err = filepath.Glob(filepath.Join(dir, "*.jwk")); err != nil {
			return nil, err
		}
		sort.Strings(files)
		if len(files) == 0 {
			path, k, err := newKeyFile(dir, protocol.EdDSA)
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(stderr, "generated signing key %s in %s\n", k.KeyID(), path)
			files = []string{path}
		}
	}
	keys := make([]*protocol.PrivateKey, 0, len(files))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fileError(setting, f, nil, err)
		}
		k, err := protocol.ParsePrivateJWK(data)
		if err != nil {
			return nil, fileError(setting, f, data, err)
		}
		warnReadable(stderr, "signing key", f)
		keys = append(keys, k)
	}
	return keys, nil
}

// newKeyFile writes a new key as the next NNNN.jwk of dir.
func newKeyFile(dir string, alg jose.SignatureAlgorithm) (string, *protocol.PrivateKey, error) {
	existing, _ := filepath.Glob(filepath.Join(dir, "*.jwk"))
	path := filepath.Join(dir, fmt.Sprintf("%04d.jwk", len(existing)+1))
	if err := writeKey(path, alg); err != nil {
		return "", nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", nil, err
	}
	k, err := protocol.ParsePrivateJWK(data)
	return path, k, err
}

func writeKey(path string, alg jose.SignatureAlgorithm) error {
	k, err := protocol.GenerateKey(alg, nil)
	if err != nil {
		return err
	}
	data, err := k.MarshalPrivateJWK()
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(data, '\n')); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func keygen(args []string, stdout io.Writer) error {
	fs := newFlagSet("keygen", "[--data-dir DIR | --out FILE] [--alg EdDSA|ES256]", `
Creates a signing key: the next NNNN.jwk of <data-dir>/keys, which signs
after the server's next start (the older keys still verify), or --out.`)
	dataDir := fs.String("data-dir", "sigil-data", "data directory; the key is added to <data-dir>/keys and signs after the next start")
	out := fs.String("out", "", "write the key to this file instead")
	alg := fs.String("alg", "EdDSA", "EdDSA or ES256")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return badUsage(fs, "keygen takes no arguments, got %q", fs.Args())
	}
	a := jose.SignatureAlgorithm(*alg)
	if a != protocol.EdDSA && a != protocol.ES256 {
		return errors.New("--alg must be EdDSA or ES256")
	}
	path := *out
	if path == "" {
		dir := filepath.Join(*dataDir, "keys")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		p, k, err := newKeyFile(dir, a)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s key %s to %s\n", *alg, k.KeyID(), p)
		return nil
	}
	if err := writeKey(path, a); err != nil {
		return err
	}
	data, _ := os.ReadFile(path)
	k, err := protocol.ParsePrivateJWK(data)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s key %s to %s\n", *alg, k.KeyID(), strings.TrimSpace(path))
	return nil
}
