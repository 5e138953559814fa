package server_test

import (
	"testing"

	"github.com/google/uuid"
	"github.com/sigil-ws/sigil/internal/sigiltest"
)

// The broker contract (broker_test.go) holds for the Redis broker on one
// redis-server and on a three-node Redis Cluster (sharded pub/sub, the
// partitions spread over the shards).
func TestRedisBrokerContract(t *testing.T) {
	brokerContract(t, newCluster(t, sigiltest.StartRedis(t).URL, "test:", nil).Broker)
}

func TestRedisBrokerContractOnCluster(t *testing.T) {
	rc := sigiltest.StartRedisCluster(t, 3)
	brokerContract(t, newCluster(t, rc.URL, "test-"+uuid.NewString()[:8]+":", nil).Broker)
}
