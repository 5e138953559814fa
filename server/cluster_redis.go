package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/redis/rueidis"
)

// ClusterConfig configures a node that runs with others as one server,
// sharing its state through Redis. Redis and Secret are required; every
// other zero value is a documented default. Secret, Partitions and
// Redis.Prefix must be the same on every node of the server.
type ClusterConfig struct {
	// Redis is the connection to Redis (URL, TLS, prefix, timeouts).
	Redis RedisConfig
	// Node names this node in the session list (SessionInfo.Node) and in
	// Redis' CLIENT LIST (unless Redis.ClientName is set). Default: the
	// host name.
	Node string
	// Secret is shared by every node: at least 32 random bytes, kept like
	// the server's signing keys. The nodes seal with a key derived from it
	// what crosses Redis that Redis must neither read nor forge: direct
	// messages (whose encrypted bodies are in the clear between the
	// nodes) and channel content keys (spec.md §19.4). A node whose Secret
	// differs from the others' does not start.
	Secret []byte
	// Heartbeat is how often the node refreshes its heartbeat and looks
	// for nodes that died. A node that stops is forgotten (its members
	// leave their channels, its sessions leave the list) within four
	// heartbeats. Default 5s.
	Heartbeat time.Duration
	// Partitions is the number of broker partitions: each node holds one
	// subscription connection per partition, and on a Redis Cluster the
	// partitions are spread over the shards. Default 16.
	Partitions int
	// MaxRefreshFamilies caps a subject's live refresh families
	// (NewRedisRefreshStore). Default 32.
	MaxRefreshFamilies int
}

// Defaults of ClusterConfig.
const (
	DefaultClusterHeartbeat  = 5 * time.Second
	DefaultClusterPartitions = 16
)

// Cluster is one node's share of a server that runs on several nodes:
// the Redis connection and everything built on it. Configure puts it into
// a Config; Close releases it after the Server's Shutdown.
type Cluster struct {
	Redis       *Redis
	Broker      *RedisBroker
	Presence    *RedisPresence
	Replay      *RedisReplayStore
	Revocations *RedisRevocationStore
	Refresh     *RedisRefreshStore
	History     *RedisHistory  // channel streams (spec.md §20), in Redis Streams
	Outcomes    *RedisOutcomes // answers of accepted pub and dm frames, for their copies (spec.md §20.10)
}

// NewCluster connects to Redis and builds the node's broker, presence and
// stores. It fails if Redis cannot be reached, or if the settings that
// the nodes of one server share (Secret, Partitions) differ from those the
// first node recorded in Redis under the prefix.
func NewCluster(cfg ClusterConfig) (*Cluster, error) {
	if cfg.Node == "" {
		cfg.Node, _ = os.Hostname()
	}
	if cfg.Redis.ClientName == "" {
		cfg.Redis.ClientName = cfg.Node
	}
	hb := redisDuration(cfg.Heartbeat, DefaultClusterHeartbeat)
	parts := cfg.Partitions
	if parts <= 0 {
		parts = DefaultClusterPartitions
	}
	now := cfg.Redis.Now
	if now == nil {
		now = time.Now
	}
	seal, err := newClusterSeal(cfg.Secret, now)
	if err != nil {
		return nil, err
	}
	r, err := NewRedis(cfg.Redis)
	if err != nil {
		return nil, err
	}
	if err := checkClusterSettings(r, parts, seal.key.ID); err != nil {
		r.Close()
		return nil, err
	}
	b := newRedisBroker(r, seal, parts)
	rev := NewRedisRevocationStore(r)
	return &Cluster{
		Redis:       r,
		Broker:      b,
		Presence:    newRedisPresence(b, cfg.Node, hb),
		Replay:      NewRedisReplayStore(r, rev),
		Revocations: rev,
		Refresh:     NewRedisRefreshStore(r, cfg.MaxRefreshFamilies),
		History:     newRedisHistory(b),
		Outcomes:    newRedisOutcomes(b),
	}, nil
}

// settingsScript records the shared settings of the nodes of one prefix,
// if none are recorded, and returns those recorded. KEYS[1] the settings;
// ARGV[1] partitions, ARGV[2] the id of the sealing key.
var settingsScript = rueidis.NewLuaScript(`
redis.call('HSETNX', KEYS[1], 'partitions', ARGV[1])
redis.call('HSETNX', KEYS[1], 'seal', ARGV[2])
return redis.call('HMGET', KEYS[1], 'partitions', 'seal')
`)

// checkClusterSettings fails if other nodes of the prefix run with other
// partitions or another secret.
func checkClusterSettings(r *Redis, partitions int, sealID string) error {
	var got []string
	err := r.call(context.Background(), "cluster.settings", func(ctx context.Context) error {
		var err error
		got, err = settingsScript.Exec(ctx, r.client, []string{r.key("cluster")},
			[]string{strconv.Itoa(partitions), sealID}).AsStrSlice()
		return err
	})
	if err != nil {
		return err
	}
	if len(got) != 2 {
		return wrapRedis("cluster.settings", errors.New("unexpected reply"))
	}
	if got[0] != strconv.Itoa(partitions) {
		return fmt.Errorf("sigil: the nodes of prefix %q run with %s partitions, not %d", r.prefix, got[0], partitions)
	}
	if got[1] != sealID {
		return fmt.Errorf("sigil: the nodes of prefix %q share another ClusterConfig.Secret", r.prefix)
	}
	return nil
}

// Configure sets cfg's Broker, Presence, Replay, Revocations, Refresh,
// History and Outcomes to the cluster's, its Redis (login limits, admin
// proofs, kicks and the Redis metrics; see Config.Redis), its Node unless set, and adds the
// ReadyCheck "redis" (Ready). New then starts them, and watches the
// revocations of every node (RevocationWatcher).
func (c *Cluster) Configure(cfg *Config) {
	cfg.Broker = c.Broker
	cfg.Presence = c.Presence
	cfg.Replay = c.Replay
	cfg.Revocations = c.Revocations
	cfg.Refresh = c.Refresh
	cfg.History = c.History
	cfg.Outcomes = c.Outcomes
	cfg.Redis = c.Redis
	if cfg.Node == "" {
		cfg.Node = c.Presence.node
	}
	cfg.ReadyChecks = append(slices.Clip(cfg.ReadyChecks), ReadyCheck{Name: "redis", Check: c.Ready})
}

// Ready reports whether the node can serve: Redis answers, every broker
// partition is subscribed, and the node's heartbeat is written. A
// readiness check (/readyz) can use it.
func (c *Cluster) Ready(ctx context.Context) error {
	if err := c.Redis.Ping(ctx); err != nil {
		return err
	}
	if !c.Broker.Ready() {
		return wrapRedis("cluster.ready", errors.New("a broker partition is reconnecting"))
	}
	if !c.Presence.Ready() {
		return wrapRedis("cluster.ready", errors.New("the heartbeat is not written"))
	}
	return nil
}

// Close removes the node from the cluster (Presence.Close), closes the
// broker's subscriptions and the Redis connection. Call it after the
// Server's Shutdown.
func (c *Cluster) Close() {
	c.Presence.Close()
	c.Broker.Close()
	c.Redis.Close()
}
