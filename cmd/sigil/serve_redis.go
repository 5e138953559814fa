package main

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sigil-ws/sigil/server"
)

// redisFlags are the cluster-mode flags of sigil serve.
type redisFlags struct {
	secretFile             string
	url, prefix, ca        string
	opTimeout, dialTimeout time.Duration
	pipeline, pool         int
	insecurePlaintext      bool
}

func (f *redisFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.url, "redis", "", "cluster mode: the Redis that the nodes share, as a URL: redis://[user:password@]host:port[/db], "+
		"rediss:// for TLS, Sentinel ?master_set=NAME&addr=host2:port, Cluster ?addr=host2:port&addr=...; "+
		"give a URL with a password as SIGIL_REDIS or in the config file, not on the command line (it is never logged). Empty: one node, state in memory")
	fs.StringVar(&f.secretFile, "cluster-secret-file", "", "cluster mode: the file of the secret the nodes share (base64url, 32+ bytes), which seals direct messages and channel keys between them; default <data-dir>/cluster-secret, created by the first node: copy it to every node")
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

// useRedis connects the node to the Redis of f and puts its shared state
// there (cluster mode, server.NewCluster). It returns what releases it,
// to call after the server's Shutdown.
func useRedis(cfg *server.Config, f *redisFlags, dataDir, node string, log *slog.Logger, stderr io.Writer) (func(), error) {
	rc, err := f.config(node)
	if err != nil {
		return nil, err
	}
	path := f.secretFile
	if path == "" {
		path = filepath.Join(dataDir, "cluster-secret")
	}
	secret, err := loadClusterSecret(path, stderr)
	if err != nil {
		return nil, err
	}
	c, err := server.NewCluster(server.ClusterConfig{Redis: rc, Node: node, Secret: secret, MaxRefreshFamilies: cfg.MaxRefreshFamilies})
	if err != nil {
		return nil, fmt.Errorf("--redis %s: %w", redactURL(f.url), err)
	}
	c.Configure(cfg)
	log.Info("cluster mode", "redis", redactURL(f.url), "prefix", rc.Prefix)
	return c.Close, nil
}

// clusterSecretBytes is the size of a generated cluster secret.
const clusterSecretBytes = 32

// loadClusterSecret reads the cluster secret from path: 32 or more bytes,
// base64url-encoded (padding optional), on one line. If the file does not
// exist it is created (mode 0600) with a new random secret, atomically, so
// that nodes starting at once on one data directory all read the same
// one. Every node of a server needs the same secret: copy the file.
func loadClusterSecret(path string, stderr io.Writer) ([]byte, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := createClusterSecret(path); err != nil {
			return nil, fmt.Errorf("creating the cluster secret: %w", err)
		}
		fmt.Fprintf(stderr, "generated the cluster secret %s: copy it to every node\n", path)
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, err
	}
	text := strings.TrimRight(strings.TrimSpace(string(data)), "=")
	secret, err := base64.RawURLEncoding.DecodeString(text)
	if err != nil || len(secret) < clusterSecretBytes {
		return nil, fmt.Errorf("cluster secret %s: want at least %d bytes, base64url-encoded", path, clusterSecretBytes)
	}
	return secret, nil
}

// createClusterSecret writes a new secret to path unless it exists: the
// secret is written to a temporary file that is then linked to path, which
// fails if another process linked its own first.
func createClusterSecret(path string) error {
	var b [clusterSecretBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".cluster-secret-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(base64.RawURLEncoding.EncodeToString(b[:]) + "\n")
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return nil
}
