package server

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
)

// watchBuffer is how many notices a watch holds for a slow fn before it
// drops them for one resync event.
const watchBuffer = 1024

// watchChannel subscribes to the Redis pub/sub channel and returns once the
// subscription is in place (or with an error if it could not be made
// within RedisConfig.OpTimeout). Until ctx is done it then calls fn, from
// one goroutine at a time, with each message that decode accepts, and with
// resync when notices may have been lost: a message that decode refuses,
// a re-subscription after a connection loss (Redis pub/sub keeps nothing),
// or fn falling behind by more than watchBuffer messages. After a
// connection loss it re-subscribes by itself, with a backoff. The end of a
// subscription is reported to Observe as op.
func watchChannel[E any](ctx context.Context, r *Redis, op, channel string, resync E, decode func(string) (E, bool), fn func(E)) error {
	ctx, cancel := context.WithCancel(ctx)
	var (
		subscribed atomic.Int64
		ready      = make(chan struct{})
		lost       = make(chan struct{}, 1)
		events     = make(chan E, watchBuffer)
	)
	signalResync := func() {
		select {
		case lost <- struct{}{}:
		default:
		}
	}
	// The hook runs in rueidis' connection goroutine: it must not block.
	hookCtx := rueidis.WithOnSubscriptionHook(ctx, func(ps rueidis.PubSubSubscription) {
		if ps.Kind != "subscribe" {
			return
		}
		if subscribed.Add(1) == 1 {
			close(ready)
		} else {
			signalResync()
		}
	})
	// Receive does not unsubscribe when ctx ends; this hook does, on the
	// connection that subscribed.
	hookCtx = rueidis.WithOnReceiveReturnHook(hookCtx, func(err error, c rueidis.CommandClient) error {
		if ctx.Err() != nil {
			ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
			defer cancel()
			_ = c.Do(ctx, c.B().Unsubscribe().Channel(channel).Build()).Error()
		}
		return err
	})
	// So does the message callback, in effect: rueidis' buffer is small,
	// and a full one stalls every command on the connection.
	onMessage := func(m rueidis.PubSubMessage) {
		ev, ok := decode(m.Message)
		if !ok {
			signalResync()
			return
		}
		select {
		case events <- ev:
		default:
			signalResync()
		}
	}
	failed := make(chan error, 1)
	go func() {
		defer cancel()
		backoff := 50 * time.Millisecond
		for {
			start, before := time.Now(), subscribed.Load()
			err := r.client.Receive(hookCtx, r.client.B().Subscribe().Channel(channel).Build(), onMessage)
			if ctx.Err() != nil {
				return
			}
			if err == nil {
				err = errors.New("subscription ended")
			}
			r.reportEvent(op, time.Since(start), err)
			if subscribed.Load() == 0 {
				failed <- err
				return
			}
			if subscribed.Load() > before {
				backoff = 50 * time.Millisecond // it worked for a while
			}
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			backoff = min(2*backoff, time.Second)
		}
	}()
	timer := time.NewTimer(r.timeout)
	defer timer.Stop()
	select {
	case <-ready:
	case err := <-failed:
		return wrapRedis(op, err)
	case <-timer.C:
		cancel()
		return wrapRedis(op, errors.New("not subscribed in time"))
	case <-ctx.Done():
		return ctx.Err()
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-events:
				fn(ev)
			case <-lost:
				fn(resync)
			}
		}
	}()
	return nil
}
