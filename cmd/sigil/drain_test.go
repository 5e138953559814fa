package main

import (
	"context"
	"errors"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/sigil-ws/sigil/client"
)

// TestServeSIGTERMDrains publishes continuously through a SIGTERM of a
// `sigil serve` process (spec.md §12.4): the server answers every frame it
// read before it closes with 1001, so every message a subscriber received
// was acknowledged to its publisher.
func TestServeSIGTERMDrains(t *testing.T) {
	url, lines, cmd := startServe(t, "--demo", "--addr", "127.0.0.1:0")
	pw := map[string]string{}
	for _, l := range lines {
		if f := strings.Fields(l); len(f) == 2 {
			pw[f[0]] = f[1]
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dial := func(user string) *client.Client {
		c, err := client.Dial(ctx, url, &client.Options{Tokens: client.Password(user, pw[user]),
			Reconnect: &client.ReconnectPolicy{Disable: true}, SubscriptionBuffer: 1 << 16})
		if err != nil {
			t.Fatalf("dial %s: %v", user, err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	var mu sync.Mutex
	acked := map[string]bool{}
	var delivered []string
	var wg sync.WaitGroup
	for _, user := range []string{"bob", "carol"} {
		sub, err := dial(user).Subscribe(ctx, "rooms.sigterm")
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range sub.C() {
				var b struct{ N string }
				if m.Decode(&b) == nil {
					mu.Lock()
					delivered = append(delivered, b.N)
					mu.Unlock()
				}
			}
		}()
	}
	progress := make(chan struct{}, 1<<16)
	var publishers []*client.Client
	var lost error
	for i := range 16 {
		if i%4 == 0 {
			publishers = append(publishers, dial("alice"))
		}
		alice := publishers[len(publishers)-1]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n := uuid.NewString()
				if err := alice.Publish(ctx, "rooms.sigterm", map[string]string{"N": n}); err != nil {
					mu.Lock()
					if lost == nil {
						lost = err
					}
					mu.Unlock()
					return
				}
				mu.Lock()
				acked[n] = true
				mu.Unlock()
				progress <- struct{}{}
			}
		}()
	}
	for range 200 {
		select {
		case <-progress:
		case <-time.After(30 * time.Second):
			t.Fatal("no progress before SIGTERM")
		}
	}
	t0 := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
	t.Logf("the server exited %v after SIGTERM", time.Since(t0))
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("clients still running after the server exited")
	}
	for _, p := range publishers {
		var ce *client.CloseError
		if !errors.As(p.Err(), &ce) || ce.Code != 1001 {
			t.Errorf("a publisher's connection ended with %v, want 1001", p.Err())
		}
	}
	missing := 0
	for _, n := range delivered {
		if !acked[n] {
			if missing++; missing <= 5 {
				t.Errorf("delivered %s, which its publisher never saw acknowledged", n)
			}
		}
	}
	t.Logf("acknowledged %d, delivered %d to 2 subscribers, %d delivered without acknowledgement; the first unacknowledged publish failed with: %v",
		len(acked), len(delivered), missing, lost)
}
