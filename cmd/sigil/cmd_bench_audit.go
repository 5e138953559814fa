package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
)

// auditResult is the audit rows' server CPU per verified publish, the log
// off, sync and async (ns, means over the rounds), and each round's ratio
// of sync and async to off.
type auditResult struct {
	offNs, syncNs, asyncNs  float64
	syncRatios, asyncRatios []float64
}

// median is the median of xs (which it sorts); 0 if there are none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	slices.Sort(xs)
	if n := len(xs); n%2 == 0 {
		return (xs[n/2-1] + xs[n/2]) / 2
	}
	return xs[len(xs)/2]
}

// auditRows measures what the audit log costs a real sigil serve: three
// fresh servers on the server's core, with the same flags but the log
// off, --audit=sync and --audit=async (the default tlog store, its
// directory in the bench's temporary one, so on $TMPDIR's file system),
// each with its own --conns publishers; then three times --rounds rounds
// of the no-subscriber row, the three servers publishing at once in each
// (sharing the core, so that a slow second of the machine falls on the
// three alike: measured one after the other, a round's ratios varied by
// ±20%). The rows give the median of the rounds' ratios.
func (b *bench) auditRows(ctx context.Context) (*auditResult, error) {
	modes := []string{"off", "sync", "async"}
	type side struct {
		base    string
		pid     int
		pubs    []*benchSession
		replies *atomic.Int64
		cpuNs   float64
	}
	sides := map[string]*side{}
	base, pid, rounds := b.base, b.srvPID, b.f.rounds
	auditRounds := 3 * rounds
	defer func() { b.base, b.srvPID, b.f.rounds = base, pid, rounds }()
	for _, m := range modes {
		dir := filepath.Join(b.dir, "audit-"+m)
		if err := os.Mkdir(dir, 0o700); err != nil {
			return nil, err
		}
		if err := b.writeData(dir); err != nil {
			return nil, err
		}
		args := []string{"serve", "--addr", "127.0.0.1:0", "--data-dir", dir, "--log-level", "error",
			"--max-refresh-families", "1000000", "--policy", filepath.Join(dir, "policy.json")}
		if m != "off" {
			args = append(args, "--audit-dir", filepath.Join(dir, "audit"), "--audit", m)
		}
		b.say("audit rows: starting sigil serve, audit log %s", m)
		s := &side{}
		var err error
		if s.base, s.pid, err = b.start(b.f.sigil, b.pin, "SIGIL_READY url=", args...); err != nil {
			return nil, err
		}
		b.base, b.srvPID = s.base, s.pid
		if s.pubs, s.replies, err = b.publishers(ctx); err != nil {
			return nil, err
		}
		sides[m] = s
	}
	b.f.rounds = 1
	res := &auditResult{}
	for r := range auditRounds {
		// The three servers at once, each with its own publishers: they
		// share the server's core, so whatever slows the machine in a
		// round slows the three alike, and a round's ratios compare
		// like with like.
		b.say("audit rows: round %d of %d, the three servers at once", r+1, auditRounds)
		var together, done sync.WaitGroup
		together.Add(len(modes))
		ns := make([]float64, len(modes))
		errs := make([]error, len(modes))
		for i, m := range modes {
			s := sides[m]
			done.Add(1)
			go func() {
				defer done.Done()
				res, err := b.flatOutOn(ctx, s.pid, &together, s.pubs, s.replies, benchLiveIn, nil)
				if err != nil {
					errs[i] = fmt.Errorf("audit %s: %w", m, err)
					return
				}
				ns[i] = res.ns
			}()
		}
		done.Wait()
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
		for i, m := range modes {
			sides[m].cpuNs += ns[i] / float64(auditRounds)
		}
		res.syncRatios = append(res.syncRatios, ns[1]/ns[0])
		res.asyncRatios = append(res.asyncRatios, ns[2]/ns[0])
	}
	for _, s := range sides {
		for _, p := range s.pubs {
			p.ws.Close()
		}
	}
	res.offNs, res.syncNs, res.asyncNs = sides["off"].cpuNs, sides["sync"].cpuNs, sides["async"].cpuNs
	return res, nil
}
