package server

import (
	"testing"

	"github.com/google/uuid"
	"github.com/sigil-ws/sigil/internal/sigiltest"
)

// The stores' tests run unchanged on a real three-node Redis Cluster, with
// each node's client discovering the cluster from the URL. Every script
// touches keys of one hash tag only, and the pipelined reads of different
// slots go to their own nodes, so nothing fails with CROSSSLOT; the keys do
// spread over the cluster.
func TestRedisStoresOnCluster(t *testing.T) {
	c := sigiltest.StartRedisCluster(t, 3)
	for _, tc := range []struct {
		name string
		run  func(*testing.T, redisEnv)
	}{
		{"ReplayAcrossNodesMatchesMemory", testReplayAcrossNodesMatchesMemory},
		{"ReplayRace", testReplayRace},
		{"ReplayLargeSeq", testReplayLargeSeq},
		{"ReplayExpiry", testReplayExpiry},
		{"ReplayCheckRevoked", testReplayCheckRevoked},
		{"RevocationAcrossNodes", testRevocationAcrossNodes},
		{"RevocationExpiry", testRevocationExpiry},
		{"RevocationWatch", testRevocationWatch},
		{"RefreshAcrossNodesMatchesMemory", testRefreshAcrossNodesMatchesMemory},
		{"RefreshRace", testRefreshRace},
		{"RefreshFamilyCap", testRefreshFamilyCap},
		{"RefreshExpiry", testRefreshExpiry},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t, redisEnv{url: c.URL, prefix: "test-" + uuid.NewString()[:8] + ":"})
		})
	}
	nodesWithKeys := 0
	for _, n := range c.KeyCounts(t) {
		if n > 0 {
			nodesWithKeys++
		}
	}
	if nodesWithKeys < 2 {
		t.Fatalf("keys per cluster node %v: the tests did not spread over the cluster", c.KeyCounts(t))
	}
	t.Logf("keys per cluster node: %v", c.KeyCounts(t))
}
