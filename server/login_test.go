package server_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
)

var (
	argonOnce  sync.Once
	argonUsers *server.UsersDoc
)

// argonAccounts are users u0..u3 with argon2id hashes (HashPassword's
// parameters: 19 MiB and tens of milliseconds per check) of "right".
func argonAccounts(t *testing.T) *server.UsersDoc {
	argonOnce.Do(func() {
		h, err := server.HashPassword("right", "argon2id")
		must(t, err)
		argonUsers = &server.UsersDoc{}
		for i := range 4 {
			argonUsers.Users = append(argonUsers.Users, server.User{Name: fmt.Sprint("u", i), Hash: h, Roles: []string{"user"}})
		}
	})
	return argonUsers
}

// tokenBody is a password grant for user with a fresh session key.
func tokenBody(t *testing.T, user, password string) []byte {
	k, err := protocol.GenerateKey(protocol.EdDSA, nil)
	must(t, err)
	jwk, _ := k.Public().MarshalJSON()
	b, _ := json.Marshal(map[string]any{"grant_type": "password", "username": user, "password": password, "jwk": json.RawMessage(jwk)})
	return b
}

// postToken posts body to /v1/token; it returns the status and Retry-After.
func postToken(t *testing.T, url string, body []byte) (int, string) {
	resp, err := http.Post(url+"/v1/token", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Error(err)
		return 0, ""
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Retry-After")
}

// Concurrent wrong passwords for one account cannot all be checked: each
// attempt is reserved before its password is hashed, so exactly
// LoginFailuresPerAccount of them are checked (401) and the others are
// refused at once (429 with Retry-After).
func TestConcurrentWrongPasswordsReserved(t *testing.T) {
	e := newEnv(t, func(c *server.Config) {
		c.Authenticator = server.StaticUsers{Doc: argonAccounts(t)}
		c.LoginFailuresPerAccount, c.LoginFailuresPerAddress = 10, 1000
	})
	const n = 60
	var wg sync.WaitGroup
	var mu sync.Mutex
	count := map[int]int{}
	start := make(chan struct{})
	for range n {
		body := tokenBody(t, "u0", "wrong")
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			st, ra := postToken(t, e.url, body)
			if st == 429 && ra == "" {
				t.Error("429 without Retry-After")
			}
			mu.Lock()
			count[st]++
			mu.Unlock()
		}()
	}
	close(start)
	wg.Wait()
	if count[401] != 10 || count[429] != n-10 {
		t.Fatalf("%d concurrent wrong passwords: %v; want 10 checked (401), %d refused (429)", n, count, n-10)
	}
}

// vmRSS reads this process's resident set size, in bytes.
func vmRSS(t *testing.T) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status:", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			must(t, err)
			return kb << 10
		}
	}
	t.Skip("no VmRSS")
	return 0
}

// A burst of 200 concurrent logins (right and wrong passwords, 4 accounts)
// runs at most PasswordHashMemory / 19 MiB password checks at once, the
// others being answered 503 with Retry-After at once and retried by the
// clients; the process's RSS stays within a bound set by that number, and
// /healthz is answered while the burst is in flight.
func TestLoginBurstBounded(t *testing.T) {
	const slots = 4
	e := newEnv(t, func(c *server.Config) {
		c.Authenticator = server.StaticUsers{Doc: argonAccounts(t)}
		c.PasswordHashMemory = slots * server.PasswordCheckMemory
		c.LoginFailuresPerAccount, c.LoginFailuresPerAddress = 3, 1000
	})
	before := vmRSS(t)
	var peak atomic.Int64
	peak.Store(before)
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if r := vmRSS(t); r > peak.Load() {
				peak.Store(r)
			}
			select {
			case <-stopSampling:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()

	const n = 200
	var wg sync.WaitGroup
	var remaining, busy atomic.Int64
	remaining.Store(n)
	var mu sync.Mutex
	final := map[int]int{}
	start := make(chan struct{})
	for i := range n {
		pw := "wrong"
		if i%10 == 0 {
			pw = "right"
		}
		body := tokenBody(t, fmt.Sprint("u", i%4), pw)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer remaining.Add(-1)
			<-start
			for {
				st, ra := postToken(t, e.url, body)
				if st != 503 {
					mu.Lock()
					final[st]++
					mu.Unlock()
					return
				}
				busy.Add(1)
				secs, err := strconv.Atoi(ra)
				if err != nil || secs < 1 {
					t.Errorf("503 with Retry-After %q", ra)
					return
				}
				time.Sleep(time.Duration(secs) * time.Second)
			}
		}()
	}
	close(start)
	waitUntil(t, "a login answered 503 (the burst saturates the checks)", func() bool { return busy.Load() > 0 })
	t0 := time.Now()
	resp, err := http.Get(e.url + "/healthz")
	must(t, err)
	resp.Body.Close()
	healthz, left := time.Since(t0), remaining.Load()
	if resp.StatusCode != 200 || left == 0 {
		t.Fatalf("/healthz %d, answered with %d logins of the burst left", resp.StatusCode, left)
	}
	wg.Wait()
	close(stopSampling)
	<-sampled
	after := vmRSS(t)

	// Every login ends as a success, a wrong password or a rate limit; at
	// most 3 wrong passwords per account were checked.
	if final[200]+final[401]+final[429] != n || final[401] > 4*3 {
		t.Fatalf("results %v", final)
	}
	// The checks hold slots × 19 MiB at most, and the Go heap may reach
	// twice its live size before a collection: 2 × slots × 19 MiB; 96 MiB
	// more cover the 200 connections (both ends are in this process),
	// goroutines and buffers. The race detector's shadow memory multiplies
	// what is touched (5-10× by its documentation): 5× under -race. So
	// +248 MiB, or +856 MiB under -race. Without the bound on concurrent
	// checks the burst runs up to 200 of them at once: the old server grew
	// by 3.7 GiB here.
	heap := int64(2 * slots * server.PasswordCheckMemory)
	if raceEnabled {
		heap *= 5
	}
	bound := heap + 96<<20
	t.Logf("RSS before %d MiB, peak %d MiB (+%d), after %d MiB; bound +%d MiB; /healthz in %v during the burst; %d answered 503 on the way; results %v",
		before>>20, peak.Load()>>20, (peak.Load()-before)>>20, after>>20, bound>>20, healthz, busy.Load(), final)
	if grew := max(peak.Load(), after) - before; grew > bound {
		t.Fatalf("RSS grew by %d MiB during the burst, bound %d MiB", grew>>20, bound>>20)
	}
}
