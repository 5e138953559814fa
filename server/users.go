package server

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sigil-ws/sigil/internal/strictjson"
	"github.com/sigil-ws/sigil/protocol"
	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// User is one entry of a users file.
type User struct {
	Name  string   `json:"name"`  // the subject; 1–64 bytes of [A-Za-z0-9._@-]
	Hash  string   `json:"hash"`  // argon2id (PHC string) or bcrypt ($2a$/$2b$/$2y$) hash
	Roles []string `json:"roles"` // roles put in session tokens
}

// UsersDoc is the users file: {"users":[{name, hash, roles}, ...]}.
type UsersDoc struct {
	Users []User `json:"users"`
}

// ParseUsers decodes a users file strictly: strict JSON (no duplicate or
// case-variant members), no unknown members, valid unique names, hashes in
// a supported format, valid role names.
func ParseUsers(data []byte) (*UsersDoc, error) {
	var doc UsersDoc
	if err := strictjson.Unmarshal(data, &doc, &strictjson.Options{MaxDepth: 8}); err != nil {
		return nil, fmt.Errorf("users: %w", err)
	}
	if doc.Users == nil {
		return nil, errors.New(`users: must be an object with a "users" array`)
	}
	seen := map[string]bool{}
	for i, u := range doc.Users {
		if !validName(u.Name) {
			return nil, fmt.Errorf("users: entry %d: invalid name", i)
		}
		if u.Name == protocol.ServerSubject {
			return nil, fmt.Errorf("users: the name %q is reserved", u.Name)
		}
		if seen[u.Name] {
			return nil, fmt.Errorf("users: duplicate user %q", u.Name)
		}
		seen[u.Name] = true
		if !supportedHash(u.Hash) {
			return nil, fmt.Errorf("users: user %q: unsupported hash format", u.Name)
		}
		for _, r := range u.Roles {
			if !validName(r) {
				return nil, fmt.Errorf("users: user %q: invalid role", u.Name)
			}
		}
	}
	return &doc, nil
}

// Marshal encodes the document with users sorted by name.
func (d *UsersDoc) Marshal() ([]byte, error) {
	sort.Slice(d.Users, func(i, j int) bool { return d.Users[i].Name < d.Users[j].Name })
	for i := range d.Users {
		if d.Users[i].Roles == nil {
			d.Users[i].Roles = []string{}
		}
	}
	b, err := json.MarshalIndent(d, "", "  ")
	return append(b, '\n'), err
}

// Lookup returns the user called name.
func (d *UsersDoc) Lookup(name string) (*User, bool) {
	for i := range d.Users {
		if d.Users[i].Name == name {
			return &d.Users[i], true
		}
	}
	return nil, false
}

func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '@' || c == '-') {
			return false
		}
	}
	return true
}

// Password hashing.

// Argon2id parameters for new hashes (OWASP: m=19 MiB, t=2, p=1).
const (
	argonMemory  = 19 * 1024
	argonTime    = 2
	argonThreads = 1
	argonKeyLen  = 32
)

// HashPassword hashes a password with argon2id ("argon2id", the default) or
// bcrypt ("bcrypt", cost 12).
func HashPassword(password, alg string) (string, error) {
	switch alg {
	case "", "argon2id":
		salt := make([]byte, 16)
		if _, err := rand.Read(salt); err != nil {
			return "", err
		}
		key := argon2.IDKey([]byte(password), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
		return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
			base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
	case "bcrypt":
		b, err := bcrypt.GenerateFromPassword([]byte(password), 12)
		return string(b), err
	}
	return "", fmt.Errorf("unknown hash algorithm %q (use argon2id or bcrypt)", alg)
}

func supportedHash(h string) bool {
	if strings.HasPrefix(h, "$2a$") || strings.HasPrefix(h, "$2b$") || strings.HasPrefix(h, "$2y$") {
		_, err := bcrypt.Cost([]byte(h))
		return err == nil
	}
	_, err := parseArgon2id(h)
	return err == nil
}

type argonParams struct {
	m       uint32
	t       uint32
	p       uint8
	salt    []byte
	key     []byte
	version int
}

func parseArgon2id(h string) (*argonParams, error) {
	parts := strings.Split(h, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return nil, errors.New("not an argon2id hash")
	}
	var a argonParams
	if _, err := fmt.Sscanf(parts[2], "v=%d", &a.version); err != nil || a.version != argon2.Version {
		return nil, errors.New("bad argon2id version")
	}
	var p uint32
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &a.m, &a.t, &p); err != nil {
		return nil, errors.New("bad argon2id parameters")
	}
	// Bound the parameters so a hostile file cannot exhaust the server.
	if a.m < 8 || a.m > 1<<20 || a.t < 1 || a.t > 16 || p < 1 || p > 16 {
		return nil, errors.New("argon2id parameters out of range")
	}
	a.p = uint8(p)
	var err error
	if a.salt, err = base64.RawStdEncoding.Strict().DecodeString(parts[4]); err != nil || len(a.salt) < 8 || len(a.salt) > 64 {
		return nil, errors.New("bad argon2id salt")
	}
	if a.key, err = base64.RawStdEncoding.Strict().DecodeString(parts[5]); err != nil || len(a.key) < 16 || len(a.key) > 64 {
		return nil, errors.New("bad argon2id key")
	}
	return &a, nil
}

// CheckPassword reports whether password matches hash, in time that does
// not depend on where they differ.
func CheckPassword(hash, password string) bool {
	if strings.HasPrefix(hash, "$2") {
		return bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) == nil
	}
	a, err := parseArgon2id(hash)
	if err != nil {
		return false
	}
	key := argon2.IDKey([]byte(password), a.salt, a.t, a.m, a.p, uint32(len(a.key)))
	return subtle.ConstantTimeCompare(key, a.key) == 1
}

// dummyHash is checked for unknown users, so that a login for an unknown
// user costs the same as one with a wrong password.
var dummyHash = sync.OnceValue(func() string {
	h, _ := HashPassword("sigil-dummy-password", "argon2id")
	return h
})

// UsersFile is the password-grant Authenticator backed by a users file. The
// file is re-read when its modification time changes, so `sigil user add`
// takes effect without a restart.
type UsersFile struct {
	// Path of the users file (required).
	Path string

	mu    sync.Mutex
	doc   *UsersDoc
	mtime time.Time
	size  int64
}

// NewUsersFile loads path and returns the authenticator.
func NewUsersFile(path string) (*UsersFile, error) {
	u := &UsersFile{Path: path}
	if _, err := u.load(); err != nil {
		return nil, err
	}
	return u, nil
}

func (u *UsersFile) load() (*UsersDoc, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	fi, err := os.Stat(u.Path)
	if err != nil {
		return nil, err
	}
	if u.doc != nil && fi.ModTime().Equal(u.mtime) && fi.Size() == u.size {
		return u.doc, nil
	}
	data, err := os.ReadFile(u.Path)
	if err != nil {
		return nil, err
	}
	doc, err := ParseUsers(data)
	if err != nil {
		return nil, err
	}
	u.doc, u.mtime, u.size = doc, fi.ModTime(), fi.Size()
	return doc, nil
}

// Authenticate implements Authenticator for the password grant.
func (u *UsersFile) Authenticate(_ context.Context, c Credentials) (*Identity, error) {
	if c.GrantType != GrantPassword {
		return nil, ErrUnsupportedGrant
	}
	doc, err := u.load()
	if err != nil {
		return nil, err
	}
	return checkUser(doc, c)
}

// StaticUsers is a password-grant Authenticator over an in-memory document
// (the demo's ephemeral users, tests).
type StaticUsers struct{ Doc *UsersDoc }

// Authenticate implements Authenticator for the password grant.
func (s StaticUsers) Authenticate(_ context.Context, c Credentials) (*Identity, error) {
	if c.GrantType != GrantPassword {
		return nil, ErrUnsupportedGrant
	}
	return checkUser(s.Doc, c)
}

func checkUser(doc *UsersDoc, c Credentials) (*Identity, error) {
	user, ok := doc.Lookup(c.Username)
	if !ok {
		CheckPassword(dummyHash(), c.Password)
		return nil, ErrInvalidCredentials
	}
	if !CheckPassword(user.Hash, c.Password) {
		return nil, ErrInvalidCredentials
	}
	return &Identity{Subject: user.Name, Roles: append([]string{}, user.Roles...)}, nil
}

// WriteUsersFile writes doc to path atomically with mode 0600.
func WriteUsersFile(path string, doc *UsersDoc) error {
	data, err := doc.Marshal()
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".users-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
