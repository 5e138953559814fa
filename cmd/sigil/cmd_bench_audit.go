package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
)

// auditResult is the audit rows' server CPU per verified publish, the log
// off, sync and async (ns, means over the rounds), and each round's ratio
// of sync and async to off.
type auditResult struct {
	offNs, syncNs, asyncNs float64
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
// each with its own --conns publishers; then the no-subscriber row's
// rounds, one round each in turn, so that the CPU's drift over the run
// falls on the three alike. It runs three times --rounds rounds: each
// round's ratios pair measurements a few seconds apart, and the rows give
// their median, which one slow second does not move as it moves a mean.
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
		round := map[string]float64{}
		for _, m := range modes {
			s := sides[m]
			b.base, b.srvPID = s.base, s.pid
			b.say("audit rows: round %d of %d, audit log %s", r+1, auditRounds, m)
			ns, err := b.flatOut(ctx, s.pubs, s.replies, benchLiveIn, nil)
			if err != nil {
				return nil, fmt.Errorf("audit %s: %w", m, err)
			}
			s.cpuNs += ns / float64(auditRounds)
			round[m] = ns
		}
		res.syncRatios = append(res.syncRatios, round["sync"]/round["off"])
		res.asyncRatios = append(res.asyncRatios, round["async"]/round["off"])
	}
	for _, s := range sides {
		for _, p := range s.pubs {
			p.ws.Close()
		}
	}
	res.offNs, res.syncNs, res.asyncNs = sides["off"].cpuNs, sides["sync"].cpuNs, sides["async"].cpuNs
	return res, nil
}
