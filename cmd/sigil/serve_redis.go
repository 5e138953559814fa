package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/sigil-ws/sigil/server"
)

// redisFlags are the cluster-mode flags of sigil serve.
type redisFlags struct {
	url, prefix, ca        string
	opTimeout, dialTimeout time.Duration
	pipeline, pool         int
	insecurePlaintext      bool
}

func (f *redisFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.url, "redis", "", "cluster mode: the Redis that the nodes share, as a URL: redis://[user:password@]host:port[/db], "+
		"rediss:// for TLS, Sentinel ?master_set=NAME&addr=host2:port, Cluster ?addr=host2:port&addr=...; "+
		"give a URL with a password as SIGIL_REDIS or in the config file, not on the command line (it is never logged). Empty: one node, state in memory")
	fs.StringVar(&f.prefix, "redis-prefix", server.DefaultRedisPrefix, "start of every Redis key and channel; the nodes of one server share it")
	fs.StringVar(&f.ca, "redis-ca", "", "PEM file of the CA certificates that rediss:// servers are checked against (default: the system roots)")
	fs.DurationVar(&f.opTimeout, "redis-timeout", server.DefaultRedisOpTimeout, "bound of each Redis call; one that runs out fails closed (the frame or login is refused with unavailable)")
	fs.DurationVar(&f.dialTimeout, "redis-dial-timeout", server.DefaultRedisDialTimeout, "bound of each connection attempt to Redis")
	fs.IntVar(&f.pipeline, "redis-pipeline", 0, "connections per Redis server carrying the pipelined commands, as a power of two (0: 4 connections, 1 for Cluster)")
	fs.IntVar(&f.pool, "redis-pool", 0, "size of the pool of dedicated Redis connections (0: 1024)")
	fs.BoolVar(&f.insecurePlaintext, "insecure-redis-plaintext", false,
		"allow redis:// (no TLS) to a host that is not a loopback address, or rediss:// with skip_verify: "+
			"session state, content keys and direct-message bodies then cross the network readable and forgeable")
}

// config checks the flags and returns the RedisConfig for node.
func (f *redisFlags) config(node string) (server.RedisConfig, error) {
	cfg := server.RedisConfig{
		URL: f.url, Prefix: f.prefix, ClientName: node,
		OpTimeout: f.opTimeout, DialTimeout: f.dialTimeout, PipelineConns: f.pipeline, PoolSize: f.pool,
	}
	u, err := url.Parse(f.url)
	if err != nil {
		return cfg, errors.New("--redis is not a valid URL") // the error would repeat it
	}
	if !f.insecurePlaintext {
		if why := redisInsecure(u); why != "" {
			return cfg, fmt.Errorf("refusing --redis %s: %s; use rediss:// (TLS), or --insecure-redis-plaintext on a network only the nodes and Redis can see",
				u.Redacted(), why)
		}
	}
	if f.ca != "" {
		pem, err := os.ReadFile(f.ca)
		if err != nil {
			return cfg, fmt.Errorf("--redis-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return cfg, fmt.Errorf("--redis-ca %s: no PEM certificate", f.ca)
		}
		cfg.TLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return cfg, nil
}

// redisInsecure says why u would carry the cluster's state readable on a
// network, or "" if it does not: a redis:// URL whose hosts (the URL's and
// every addr= of a Sentinel or Cluster URL) are not all loopback
// addresses, or a rediss:// URL that skips certificate verification. A
// unix:// socket is local.
func redisInsecure(u *url.URL) string {
	switch u.Scheme {
	case "unix":
		return ""
	case "rediss", "valkeys":
		if q := u.Query(); q.Has("skip_verify") && q.Get("skip_verify") != "false" && q.Get("skip_verify") != "0" {
			return "skip_verify turns off the check of the server's certificate"
		}
		return ""
	}
	hosts := append([]string{u.Host}, u.Query()["addr"]...)
	for _, h := range hosts {
		if !loopbackHost(h) {
			return "plaintext to " + h + ", which is not a loopback address"
		}
	}
	return ""
}

// loopbackHost reports whether hostport (a port is optional) names a
// loopback address: localhost or a loopback IP. An empty host is
// localhost, as for the Redis client.
func loopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	return host == "" || loopbackName(host)
}

// redactURL is s without its password, for logs.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(invalid URL)"
	}
	return u.Redacted()
}

// useRedis connects to the Redis of f and puts the node's shared state
// there (cluster mode). It returns what closes the connection.
func useRedis(cfg *server.Config, f *redisFlags, node string, log *slog.Logger) (func(), error) {
	rc, err := f.config(node)
	if err != nil {
		return nil, err
	}
	r, err := server.NewRedis(rc)
	if err != nil {
		return nil, fmt.Errorf("--redis %s: %w", redactURL(f.url), err)
	}
	cfg.Replay = server.NewRedisReplayStore(r)
	cfg.Revocations = server.NewRedisRevocationStore(r)
	cfg.Refresh = server.NewRedisRefreshStore(r, cfg.MaxRefreshFamilies)
	cfg.Redis = r
	log.Info("cluster mode", "redis", redactURL(f.url), "prefix", rc.Prefix)
	return r.Close, nil
}
