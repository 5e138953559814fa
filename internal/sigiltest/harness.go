package sigiltest

import (
	"bytes"
	"io"
	"log/slog"
	"sync"

	"golang.org/x/crypto/bcrypt"
)

// Password is the password of every test user; PasswordHash is its bcrypt
// hash, for a users document.
const Password = "pw"

var (
	hashOnce sync.Once
	pwHash   string
)

// PasswordHash returns the bcrypt hash of Password at the lowest cost,
// computed once per test binary.
func PasswordHash() string {
	hashOnce.Do(func() {
		h, err := bcrypt.GenerateFromPassword([]byte(Password), bcrypt.MinCost)
		if err != nil {
			panic(err)
		}
		pwHash = string(h)
	})
	return pwHash
}

// QuietLogger returns a logger that discards everything, for servers under
// test.
func QuietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// SyncBuffer is a bytes.Buffer that a process or goroutine may write while
// a test reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

var _ io.Writer = (*SyncBuffer)(nil)

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
