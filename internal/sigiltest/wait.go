package sigiltest

import (
	"testing"
	"time"
)

// WaitLimit is the safety limit of Eventually: far beyond what any wait
// takes on a loaded 2-core machine, so that a test reaching it is stuck,
// not slow. It is never what a test measures.
const WaitLimit = 60 * time.Second

// Eventually polls cond (every 5 ms) until it holds. If it still does not
// after WaitLimit, it fails the test with what and, if given, diag's
// report. Tests wait on progress with it, never on a wall-clock budget.
func Eventually(t testing.TB, what string, cond func() bool, diag ...func() string) {
	t.Helper()
	deadline := time.Now().Add(WaitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			msg := ""
			for _, d := range diag {
				msg += "\n" + d()
			}
			t.Fatalf("waited %v for %s%s", WaitLimit, what, msg)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
