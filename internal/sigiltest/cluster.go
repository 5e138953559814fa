package sigiltest

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// RedisCluster is a Redis Cluster of redis-server processes owned by one
// test: every node a primary, no replicas, no persistence.
type RedisCluster struct {
	// Nodes are the cluster's servers.
	Nodes []*Redis
	// URL names every node, in the form server.RedisConfig takes for a
	// cluster: redis://host1:port1?addr=host2:port2&addr=...
	URL string
}

// StartRedisCluster starts n (at least 3) cluster-enabled redis-servers,
// joins them into one cluster with redis-cli --cluster create, which splits
// the 16384 slots among them, and waits until every node reports the
// cluster ok. It fails the test if redis-server or redis-cli is missing.
func StartRedisCluster(t testing.TB, n int) *RedisCluster {
	t.Helper()
	if n < 3 {
		t.Fatalf("sigiltest: a Redis Cluster needs at least 3 primaries, not %d", n)
	}
	need(t, "redis-cli")
	c := &RedisCluster{}
	addrs := make([]string, n)
	for i := range n {
		r := startRedis(t, func(r *Redis) {
			r.args = []string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "30000"}
		})
		c.Nodes = append(c.Nodes, r)
		addrs[i] = r.Addr
	}
	c.URL = "redis://" + addrs[0] + "?addr=" + strings.Join(addrs[1:], "&addr=")

	args := append(append([]string{"--cluster", "create"}, addrs...), "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("sigiltest: redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(redisStartLimit)
	for _, r := range c.Nodes {
		for {
			info, err := r.command("CLUSTER INFO")
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("sigiltest: cluster node %s not ok within %v: %v %s", r.Addr, redisStartLimit, err, info)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return c
}

// KeyCounts returns how many keys each node holds (DBSIZE), in the order
// of Nodes: a test can check that its keys did spread over the cluster.
func (c *RedisCluster) KeyCounts(t testing.TB) []int {
	t.Helper()
	counts := make([]int, len(c.Nodes))
	for i, r := range c.Nodes {
		reply, err := r.command("DBSIZE")
		if err == nil {
			counts[i], err = strconv.Atoi(reply)
		}
		if err != nil {
			t.Fatalf("sigiltest: DBSIZE of %s: %v", r.Addr, err)
		}
	}
	return counts
}
