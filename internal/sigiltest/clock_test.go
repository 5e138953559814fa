package sigiltest

import (
	"testing"
	"time"
)

func TestClock(t *testing.T) {
	stopped := NewStoppedClock()
	t0 := stopped.Now()
	stopped.Advance(time.Hour)
	if got := stopped.Now().Sub(t0); got != time.Hour {
		t.Fatalf("a stopped clock moved %v after Advance(1h)", got)
	}
	running := NewClock()
	before := time.Now()
	running.Advance(time.Hour)
	if got := running.Now(); got.Before(before.Add(time.Hour)) {
		t.Fatalf("a running clock after Advance(1h) reads %v, before %v+1h", got, before)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("Advance(-1) did not panic")
		}
	}()
	running.Advance(-1)
}
