package server

import (
	"context"
	"time"
)

// linger waits up to d for the next piece of work on ch, for a goroutine
// that finished its own and may be handed more (the writer and reader
// goroutines: hub.writer, hub.reader), so that a busy server reuses
// goroutines whose stacks have grown: false once d passed or ctx is done.
// *t is the goroutine's timer, made on first use.
func linger[T any](ctx context.Context, ch <-chan T, t **time.Timer, d time.Duration) (T, bool) {
	if *t == nil {
		*t = time.NewTimer(d)
	} else {
		(*t).Reset(d)
	}
	var zero T
	select {
	case v := <-ch:
		return v, true
	case <-(*t).C:
		return zero, false
	case <-ctx.Done():
		(*t).Stop()
		return zero, false
	}
}
