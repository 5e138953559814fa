package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	iofs "io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	sigiljs "github.com/sigil-ws/sigil/client/js"
	"github.com/sigil-ws/sigil/examples/chat"
	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
)

type serveFlags struct {
	addr, config, dataDir, keyFiles, users, policy string
	tlsCert, tlsKey                                string
	insecureHTTP, demo, trustXFF                   bool
	origins, issuer, audience, wsURL               string
	tokenTTL, refreshTTL, shutdownTimeout          time.Duration
	maxFrame, maxFamilies, hashMemoryMiB           int
	http                                           server.HTTPConfig
	extIssuer, extAudience, extJWKS, extRolesClaim string
	extSubjectClaim, extRoleMap, extDefaultRoles   string
	logLevel, logFormat                            string
	node                                           string
	redis                                          redisFlags
	audit                                          auditFlags
}

func serveFlagSet(f *serveFlags) *flag.FlagSet {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.StringVar(&f.addr, "addr", "127.0.0.1:8080", "listen address, in every mode (port 0: a free port, printed in the ready line)")
	fs.StringVar(&f.config, "config", "", "JSON config file (flag names as keys); flags > SIGIL_* env > file")
	fs.StringVar(&f.dataDir, "data-dir", "sigil-data", "data directory (keys/, users.json)")
	fs.StringVar(&f.keyFiles, "key-files", "", "comma-separated private JWK files, oldest first; the last signs (default: <data-dir>/keys/*.jwk, generated on first start)")
	fs.StringVar(&f.users, "users", "", "users file for the password grant (default <data-dir>/users.json if it exists)")
	fs.StringVar(&f.policy, "policy", "", "policy file (default: the built-in chat policy)")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "TLS certificate file")
	fs.StringVar(&f.tlsKey, "tls-key", "", "TLS key file")
	fs.BoolVar(&f.insecureHTTP, "insecure-http", false, "allow plain HTTP on a non-loopback address")
	fs.BoolVar(&f.demo, "demo", false, "demo mode: ephemeral keys and users, chat app at /")
	fs.StringVar(&f.origins, "origins", "", "comma-separated extra allowed browser origins for /v1/ws")
	fs.StringVar(&f.issuer, "issuer", "", "iss of session tokens (default sigil)")
	fs.StringVar(&f.audience, "audience", "", "aud of session tokens (default sigil.v1)")
	fs.StringVar(&f.wsURL, "ws-url", "", "ws_url returned by /v1/token (default: from the request)")
	fs.DurationVar(&f.tokenTTL, "token-ttl", 15*time.Minute, "session token lifetime")
	fs.DurationVar(&f.refreshTTL, "refresh-ttl", 24*time.Hour, "refresh token family lifetime")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 10*time.Second, "drain deadline on SIGTERM")
	fs.IntVar(&f.maxFrame, "max-frame", protocol.DefaultMaxFrame, "client frame size limit in bytes")
	fs.IntVar(&f.maxFamilies, "max-refresh-families", server.DefaultMaxFamilies, "live refresh-token families (logins) per user; one more login evicts the oldest")
	fs.IntVar(&f.hashMemoryMiB, "password-hash-memory", server.DefaultPasswordHashMemory>>20,
		"MiB that concurrent password checks may use, at 19 MiB each (argon2id); logins beyond get 503 with Retry-After")
	def := server.DefaultHTTPConfig()
	fs.DurationVar(&f.http.ReadHeaderTimeout, "read-header-timeout", def.ReadHeaderTimeout, "HTTP: time to read a request's headers")
	fs.DurationVar(&f.http.ReadTimeout, "read-timeout", def.ReadTimeout, "HTTP: time to read a whole request, body included (WebSockets are not affected)")
	fs.DurationVar(&f.http.WriteTimeout, "write-timeout", def.WriteTimeout, "HTTP: time to handle a request and write its response (WebSockets are not affected)")
	fs.DurationVar(&f.http.IdleTimeout, "idle-timeout", def.IdleTimeout, "HTTP: how long an idle keep-alive connection is kept")
	fs.IntVar(&f.http.MaxHeaderBytes, "max-header-bytes", 0, "HTTP: request header size limit in bytes (0: max-frame + 16 KiB)")
	fs.StringVar(&f.extIssuer, "external-issuer", "", "trusted identity provider iss (enables grant_type external)")
	fs.StringVar(&f.extAudience, "external-audience", "", "expected aud of identity provider tokens")
	fs.StringVar(&f.extJWKS, "external-jwks", "", "identity provider JWKS: a file or an https:// URL (http:// only to localhost or a loopback IP)")
	fs.StringVar(&f.extRolesClaim, "external-roles-claim", "roles", "claim holding the provider's roles")
	fs.StringVar(&f.extSubjectClaim, "external-subject-claim", "sub", "claim used as the subject")
	fs.StringVar(&f.extRoleMap, "external-role-map", "", `JSON object mapping provider roles to Sigil roles, e.g. {"staff":["user"]}`)
	fs.StringVar(&f.extDefaultRoles, "external-default-roles", "", "comma-separated roles given to every external identity")
	fs.BoolVar(&f.trustXFF, "trust-forwarded-for", false, "rate-limit by X-Forwarded-For (behind a trusted proxy)")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "text", "text or json")
	host, _ := os.Hostname()
	fs.StringVar(&f.node, "node", host, "name of this node, in every log line (node=) and in the metric sigil_node_info{node}")
	f.redis.register(fs)
	f.audit.register(fs)
	return fs
}

func serve(args []string, stdout, stderr io.Writer) error {
	var f serveFlags
	fs := serveFlagSet(&f)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return badUsage(fs, "serve takes no arguments, got %q (flags go before them?)", fs.Args())
	}
	cfgPath := f.config
	if cfgPath == "" {
		cfgPath = os.Getenv("SIGIL_CONFIG")
	}
	if err := applySources(fs, cfgPath, os.Getenv); err != nil {
		return err
	}
	if err := checkServeFlags(&f); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	var handler slog.Handler = slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})
	if f.logFormat == "json" {
		handler = slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level})
	}
	log := slog.New(handler)

	cfg := server.Config{Node: f.node,
		Issuer: f.issuer, Audience: f.audience, WSURL: f.wsURL,
		TokenTTL: f.tokenTTL, RefreshTTL: f.refreshTTL, MaxFrame: f.maxFrame,
		AllowedOrigins: splitList(f.origins), TrustForwardedFor: f.trustXFF, Logger: log,
		MaxRefreshFamilies: f.maxFamilies, PasswordHashMemory: int64(f.hashMemoryMiB) << 20, HTTP: f.http,
	}
	if f.policy != "" {
		var err error
		if cfg.Policy, err = readPolicy(f.policy); err != nil {
			return err
		}
	}
	var usersDoc *server.UsersDoc // for the policy's warnings
	var auth server.Authenticators
	var demoPasswords [][2]string
	addr := f.addr
	tlsOn := f.tlsCert != "" || f.tlsKey != ""
	if tlsOn && (f.tlsCert == "" || f.tlsKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if !tlsOn && !f.insecureHTTP && !isLoopback(addr) {
		return fmt.Errorf("refusing plain HTTP on non-loopback address %s: use --tls-cert/--tls-key, or --insecure-http behind a TLS proxy", addr)
	}
	// Everything is loaded and checked before the server listens, and it
	// says it is ready only once it listens.
	var tlsConf *tls.Config
	if tlsOn {
		cert, err := tls.LoadX509KeyPair(f.tlsCert, f.tlsKey)
		if err != nil {
			return fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	if f.demo {
		doc, pws, err := demoUsers()
		if err != nil {
			return err
		}
		auth.Password = server.StaticUsers{Doc: doc}
		demoPasswords = pws
		if f.keyFiles != "" { // fixed keys: browser sessions survive a restart of the demo
			if cfg.Keys, err = loadKeys(splitList(f.keyFiles), f.dataDir, stderr); err != nil {
				return err
			}
		}
	} else {
		keys, err := loadKeys(splitList(f.keyFiles), f.dataDir, stderr)
		if err != nil {
			return err
		}
		cfg.Keys = keys
		users := f.users
		if users == "" {
			if p := f.dataDir + "/users.json"; fileExists(p) {
				users = p
			}
		}
		if users != "" {
			if usersDoc, err = readUsers(users); err != nil {
				return err
			}
			u, err := server.NewUsersFile(users)
			if err != nil {
				return fileError("--users", users, nil, err)
			}
			auth.Password = u
		} else if f.extIssuer == "" {
			log.Warn("no users file (--users, or " + f.dataDir + "/users.json) and no --external-issuer: nobody can log in; add a user with: sigil user add --users " + f.dataDir + "/users.json NAME")
		} else {
			log.Warn("no users file (--users, or " + f.dataDir + "/users.json): only --external-issuer logins")
		}
	}
	if f.extIssuer != "" {
		x := &server.ExternalIssuer{
			Issuer: f.extIssuer, Audience: f.extAudience, RolesClaim: f.extRolesClaim,
			SubjectClaim: f.extSubjectClaim, DefaultRoles: splitList(f.extDefaultRoles),
		}
		switch {
		case f.extJWKS == "":
			return errors.New("--external-issuer needs --external-jwks")
		case strings.Contains(f.extJWKS, "://"):
			x.JWKSURL = f.extJWKS
		default:
			if _, err := os.Stat(f.extJWKS); err != nil {
				return fmt.Errorf("--external-jwks: %w", err)
			}
			x.JWKSFile = f.extJWKS
		}
		if f.extAudience == "" {
			return errors.New("--external-issuer needs --external-audience")
		}
		if err := x.Validate(); err != nil {
			return fmt.Errorf("--external-jwks: %w", err)
		}
		if f.extRoleMap != "" {
			if err := json.Unmarshal([]byte(f.extRoleMap), &x.RoleMap); err != nil {
				return fmt.Errorf("--external-role-map: %w", err)
			}
		}
		auth.External = x
	}
	cfg.Authenticator = auth
	logWarnings(log, "settings", serveFlagWarnings(&f))
	if cfg.Policy != nil {
		logWarnings(log, "--policy "+f.policy, policyWarnings(cfg.Policy, usersDoc, f.extIssuer != ""))
	}
	log = log.With("node", f.node) // as the server's own lines
	if f.redis.url != "" {
		if f.demo {
			return errors.New("--demo has keys and users of its own process: a cluster's nodes need shared ones (--data-dir)")
		}
		closeRedis, err := useRedis(&cfg, &f.redis, f.dataDir, f.node, log, stderr)
		if err != nil {
			return err
		}
		defer closeRedis()
	}

	closeAudit, err := useAudit(&cfg, &f.audit, f.redis.url != "")
	if err != nil {
		return err
	}
	defer closeAudit() // after the server's Shutdown
	srv, err := server.New(cfg)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	srv.Mount(mux)
	mux.Handle("/js/", http.StripPrefix("/js/", http.FileServerFS(sigiljs.FS)))
	if f.demo {
		static, _ := iofs.Sub(chat.Static, "static")
		mux.Handle("/", http.FileServerFS(static))
	}
	hs := srv.HTTPServer(mux)
	hs.TLSConfig = tlsConf
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		_ = srv.Shutdown(context.Background())
		return err
	}
	scheme := "http"
	if tlsOn {
		scheme = "https"
	}
	url := scheme + "://" + ln.Addr().String()
	if f.demo {
		fmt.Fprintf(stdout, "Sigil demo: open %s/ in two browser windows.\nDemo users (passwords are shown only now):\n", url)
		for _, p := range demoPasswords {
			fmt.Fprintf(stdout, "  %-6s %s\n", p[0], p[1])
		}
	} else {
		fmt.Fprintf(stdout, "Sigil listening on %s\n", url)
	}
	fmt.Fprintf(stdout, "SIGIL_READY url=%s\n", url)

	errc := make(chan error, 1)
	go func() {
		if tlsOn {
			errc <- hs.ServeTLS(ln, "", "") // the certificate is in TLSConfig
		} else {
			errc <- hs.Serve(ln)
		}
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	select {
	case err := <-errc:
		return err
	case <-sig:
	}
	log.Info("shutting down")
	ctx, cancel := context.WithTimeout(context.Background(), f.shutdownTimeout)
	defer cancel()
	_ = srv.Shutdown(ctx)
	return hs.Shutdown(ctx)
}

// demoUsers makes the demo's ephemeral users with random passwords.
func demoUsers() (*server.UsersDoc, [][2]string, error) {
	spec := []struct {
		name  string
		roles []string
	}{
		{"alice", []string{"user"}}, {"bob", []string{"user"}},
		{"carol", []string{"user", "announcer"}}, {"admin", []string{"admin"}},
	}
	doc := &server.UsersDoc{}
	var pws [][2]string
	for _, u := range spec {
		var b [12]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, nil, err
		}
		pw := base64.RawURLEncoding.EncodeToString(b[:])
		h, err := server.HashPassword(pw, "argon2id")
		if err != nil {
			return nil, nil, err
		}
		doc.Users = append(doc.Users, server.User{Name: u.name, Hash: h, Roles: u.roles})
		pws = append(pws, [2]string{u.name, pw})
	}
	return doc, pws, nil
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	return loopbackName(host)
}

// loopbackName reports whether host is localhost or a loopback IP.
func loopbackName(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
