package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
)

// loadStats is what --stats reports: what the servers spent on the run,
// from their /metrics read just before the first publish and again after
// the drain. process_cpu_seconds_total is the server process' CPU time
// (user + system, from /proc on Linux); sigil_redis_seconds_count{op} counts
// the node's Redis operations, each one round trip (commands sent together
// in one pipeline are one operation).
type loadStats struct {
	Servers []serverStats `json:"servers"`
	// Totals over the servers.
	CPUSeconds     float64            `json:"cpu_s"`
	FramesAccepted float64            `json:"frames_accepted"`
	RedisOps       map[string]float64 `json:"redis_ops,omitempty"`
	RedisOpsTotal  float64            `json:"redis_ops_total"`
	// Per acknowledged publish, and per frame accepted (verified).
	CPUMsPerPublish    float64 `json:"cpu_ms_per_publish"`
	RedisOpsPerPublish float64 `json:"redis_ops_per_publish"`
	RedisOpsPerFrame   float64 `json:"redis_ops_per_frame"`
}

// serverStats is one server's share.
type serverStats struct {
	Server         string             `json:"server"`
	CPUSeconds     float64            `json:"cpu_s"`
	FramesAccepted float64            `json:"frames_accepted"`
	RedisOps       map[string]float64 `json:"redis_ops,omitempty"`
}

const redisOpsMetric = `sigil_redis_seconds_count{op="`

// sampleStats reads every server's metrics.
func (l *loadRun) sampleStats(ctx context.Context) ([]map[string]float64, error) {
	hc := cliHTTPClient()
	out := make([]map[string]float64, len(l.httpBases))
	for i, b := range l.httpBases {
		v, err := readMetrics(ctx, hc, b+"/metrics")
		if err != nil {
			return nil, fmt.Errorf("--stats: %s: %w", b, err)
		}
		out[i] = v
	}
	return out, nil
}

// diffStats makes the report from the samples before and after a run of
// publishes acknowledged publishes.
func (l *loadRun) diffStats(before, after []map[string]float64, publishes int64) *loadStats {
	st := &loadStats{RedisOps: map[string]float64{}}
	for i, b := range l.httpBases {
		s := serverStats{Server: b,
			CPUSeconds:     round3(after[i]["process_cpu_seconds_total"] - before[i]["process_cpu_seconds_total"]),
			FramesAccepted: after[i]["sigil_frames_accepted_total"] - before[i]["sigil_frames_accepted_total"],
		}
		for name, v := range after[i] {
			op, ok := strings.CutPrefix(name, redisOpsMetric)
			if !ok {
				continue
			}
			op = strings.TrimSuffix(op, `"}`)
			if d := v - before[i][name]; d > 0 {
				if s.RedisOps == nil {
					s.RedisOps = map[string]float64{}
				}
				s.RedisOps[op] = d
				st.RedisOps[op] += d
				st.RedisOpsTotal += d
			}
		}
		st.CPUSeconds += s.CPUSeconds
		st.FramesAccepted += s.FramesAccepted
		st.Servers = append(st.Servers, s)
	}
	st.CPUSeconds = round3(st.CPUSeconds)
	if publishes > 0 {
		st.CPUMsPerPublish = round3(1000 * st.CPUSeconds / float64(publishes))
		st.RedisOpsPerPublish = round3(st.RedisOpsTotal / float64(publishes))
	}
	if st.FramesAccepted > 0 {
		st.RedisOpsPerFrame = round3(st.RedisOpsTotal / st.FramesAccepted)
	}
	if len(st.RedisOps) == 0 {
		st.RedisOps = nil
	}
	return st
}

func (st *loadStats) print(w io.Writer) {
	fmt.Fprintf(w, "server CPU     %.3f s over %d server(s), %.3f ms per acknowledged publish; %.0f frames accepted\n",
		st.CPUSeconds, len(st.Servers), st.CPUMsPerPublish, st.FramesAccepted)
	if st.RedisOpsTotal == 0 {
		return
	}
	ops := make([]string, 0, len(st.RedisOps))
	for op := range st.RedisOps {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	var b strings.Builder
	for i, op := range ops {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %.0f", op, st.RedisOps[op])
	}
	fmt.Fprintf(w, "redis          %.0f round trips: %.3f per publish, %.3f per accepted frame (%s)\n",
		st.RedisOpsTotal, st.RedisOpsPerPublish, st.RedisOpsPerFrame, b.String())
}
