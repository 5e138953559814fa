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

// cli runs redis-cli against node i and returns its output.
func (c *RedisCluster) cli(t testing.TB, i int, args ...string) string {
	t.Helper()
	host, port, _ := strings.Cut(c.Nodes[i].Addr, ":")
	out, err := exec.Command("redis-cli", append([]string{"-h", host, "-p", port}, args...)...).CombinedOutput()
	if err != nil || strings.HasPrefix(string(out), "ERR") {
		t.Fatalf("sigiltest: redis-cli %v on %s: %v %s", args, c.Nodes[i].Addr, err, out)
	}
	return strings.TrimSpace(string(out))
}

// Owner returns the index in Nodes of the node that owns slot.
func (c *RedisCluster) Owner(t testing.TB, slot int) int {
	t.Helper()
	for i := range c.Nodes {
		id := c.cli(t, i, "CLUSTER", "MYID")
		for _, line := range strings.Split(c.cli(t, i, "CLUSTER", "NODES"), "\n") {
			f := strings.Fields(line)
			if len(f) < 8 || f[0] != id {
				continue
			}
			for _, r := range f[8:] {
				lo, hi, ok := strings.Cut(r, "-")
				if !ok {
					hi = lo
				}
				a, err1 := strconv.Atoi(lo)
				b, err2 := strconv.Atoi(hi)
				if err1 == nil && err2 == nil && a <= slot && slot <= b {
					return i
				}
			}
		}
	}
	t.Fatalf("sigiltest: no node owns slot %d", slot)
	return -1
}

// Slot returns the cluster slot of key (CLUSTER KEYSLOT).
func (c *RedisCluster) Slot(t testing.TB, key string) int {
	t.Helper()
	n, err := strconv.Atoi(c.cli(t, 0, "CLUSTER", "KEYSLOT", key))
	if err != nil {
		t.Fatalf("sigiltest: CLUSTER KEYSLOT %s: %v", key, err)
	}
	return n
}

// MigrateSlot moves slot, with its keys, from the node that owns it to
// Nodes[to], the way a live resharding does: SETSLOT IMPORTING and
// MIGRATING, MIGRATE of each key, then SETSLOT NODE on every node. Redis
// then tells the subscribers of the slot's shard channels that they were
// unsubscribed. It returns the index of the previous owner.
func (c *RedisCluster) MigrateSlot(t testing.TB, slot, to int) int {
	t.Helper()
	from := c.Owner(t, slot)
	if from == to {
		return from
	}
	s := strconv.Itoa(slot)
	fromID, toID := c.cli(t, from, "CLUSTER", "MYID"), c.cli(t, to, "CLUSTER", "MYID")
	c.cli(t, to, "CLUSTER", "SETSLOT", s, "IMPORTING", fromID)
	c.cli(t, from, "CLUSTER", "SETSLOT", s, "MIGRATING", toID)
	host, port, _ := strings.Cut(c.Nodes[to].Addr, ":")
	for {
		keys := strings.Fields(c.cli(t, from, "CLUSTER", "GETKEYSINSLOT", s, "100"))
		if len(keys) == 0 {
			break
		}
		c.cli(t, from, append([]string{"MIGRATE", host, port, "", "0", "5000", "KEYS"}, keys...)...)
	}
	for i := range c.Nodes {
		c.cli(t, i, "CLUSTER", "SETSLOT", s, "NODE", toID)
	}
	return from
}
