package server

import (
	"net/http"
	"time"
)

// PasswordCheckMemory is the memory one password check is counted at when
// Config.PasswordHashMemory is divided into concurrent checks: 19 MiB, what
// an argon2id check with HashPassword's parameters (m = 19,456 KiB) takes.
const PasswordCheckMemory = argonMemory * 1024

// DefaultPasswordHashMemory is the default Config.PasswordHashMemory: 256
// MiB, 13 concurrent checks.
const DefaultPasswordHashMemory = 256 << 20

// passwordChecks is the number of password checks that may run at once.
func (c *Config) passwordChecks() int {
	return max(1, int(c.PasswordHashMemory/PasswordCheckMemory))
}

// passwordSlot takes one of the concurrent password-check slots, or
// answers 503 unavailable at once, with Retry-After, when all are busy: a
// burst of logins then costs the server at most PasswordHashMemory, and
// the excess is refused before any password is hashed.
func (s *Server) passwordSlot() (release func(), aerr *apiError) {
	select {
	case s.hashSlots <- struct{}{}:
	default:
		e := newAPIError(http.StatusServiceUnavailable, ErrCodeUnavailable, "too many logins in progress")
		e.retryAfter = time.Second
		return nil, e
	}
	s.m.passwordChecks.Inc()
	return func() {
		s.m.passwordChecks.Dec()
		<-s.hashSlots
	}, nil
}

func rateLimited(left time.Duration) *apiError {
	e := newAPIError(http.StatusTooManyRequests, ErrCodeRateLimited, "too many failed attempts")
	e.retryAfter = left
	return e
}
