package sigiltest

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// redisStartLimit bounds how long a redis-server may take to answer PING
// after it was started. It is a safety limit for a stuck machine, not a
// budget a test is measured against: a healthy start takes milliseconds.
const redisStartLimit = 30 * time.Second

// Redis is a redis-server process owned by one test: its own process on a
// free loopback port, with no persistence, stopped when the test ends.
type Redis struct {
	// Addr is the server's host:port, on 127.0.0.1.
	Addr string
	// URL is Addr as a redis:// URL (rediss:// for TLS), the form
	// server.RedisConfig takes.
	URL string
	// RootCAs, for a server from StartRedisTLS, holds the certificate that
	// clients must trust; nil otherwise.
	RootCAs *x509.CertPool

	t    testing.TB
	port int
	dir  string
	args []string // extra redis-server arguments
	conf string   // a config file to start from (for a sentinel), or ""
	tls  []string // TLS arguments: the port is then a TLS port

	mu   sync.Mutex
	proc *exec.Cmd
	done chan struct{} // closed when proc has exited
}

// StartRedis starts a redis-server from PATH on a free port of 127.0.0.1,
// waits until it answers PING, and stops it when the test ends. It fails the
// test if redis-server is not installed.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	return startRedis(t)
}

// StartRedisArgs is StartRedis with extra redis-server arguments, such as
// "--requirepass", "pw"; Restart keeps them.
func StartRedisArgs(t testing.TB, args ...string) *Redis {
	t.Helper()
	return startRedis(t, func(r *Redis) { r.args = args })
}

// StartRedisTLS is StartRedis with TLS only: URL is rediss://, and the
// server presents a certificate for 127.0.0.1 that only RootCAs trusts.
// Clients are not asked for certificates.
func StartRedisTLS(t testing.TB) *Redis {
	t.Helper()
	dir := t.TempDir()
	pool, err := selfSigned(dir)
	if err != nil {
		t.Fatalf("sigiltest: making a certificate: %v", err)
	}
	return startRedis(t, func(r *Redis) {
		r.RootCAs = pool
		r.tls = []string{
			"--tls-cert-file", filepath.Join(dir, "cert.pem"),
			"--tls-key-file", filepath.Join(dir, "key.pem"),
			"--tls-ca-cert-file", filepath.Join(dir, "cert.pem"),
			"--tls-auth-clients", "no",
		}
	})
}

// startRedis starts a redis-server set up by opts.
func startRedis(t testing.TB, opts ...func(*Redis)) *Redis {
	t.Helper()
	need(t, "redis-server")
	r := &Redis{t: t, dir: t.TempDir()}
	for _, o := range opts {
		o(r)
	}
	t.Cleanup(r.Stop)
	// A free port is found by binding :0 and closing it, so another
	// process may take it before redis-server binds it. Such a start fails
	// at once and is retried on a new port.
	var err error
	for range 5 {
		r.port, err = freePort()
		if err != nil {
			t.Fatalf("sigiltest: finding a free port: %v", err)
		}
		r.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port))
		r.URL = "redis://" + r.Addr
		if r.tls != nil {
			r.URL = "rediss://" + r.Addr
		}
		if err = r.start(); err == nil {
			return r
		}
	}
	t.Fatalf("sigiltest: %v", err)
	return nil
}

// Stop kills the server at once (SIGKILL, as a crash would) and waits for it
// to exit. Its data is lost: there is no persistence. Stopping a stopped
// server does nothing.
func (r *Redis) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc == nil {
		return
	}
	_ = r.proc.Process.Kill()
	<-r.done
	r.proc = nil
}

// Pause stops the server process (SIGSTOP) without closing its
// connections: clients see a Redis that accepts bytes and never answers, as
// in a network partition. Resume undoes it.
func (r *Redis) Pause() { r.signal(syscall.SIGSTOP) }

// Resume continues a paused server (SIGCONT).
func (r *Redis) Resume() { r.signal(syscall.SIGCONT) }

func (r *Redis) signal(sig syscall.Signal) {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc == nil {
		r.t.Fatalf("sigiltest: redis-server is stopped")
	}
	if err := r.proc.Process.Signal(sig); err != nil {
		r.t.Fatalf("sigiltest: signalling redis-server: %v", err)
	}
}

// Restart stops the server if it runs and starts a new, empty one on the
// same port. It fails the test if the server does not come up.
func (r *Redis) Restart() {
	r.t.Helper()
	r.Stop()
	if err := r.start(); err != nil {
		r.t.Fatalf("sigiltest: restarting redis-server: %v", err)
	}
}

// start runs redis-server on r.port and waits until it answers PING.
func (r *Redis) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	args := []string{"--port", strconv.Itoa(r.port)}
	if r.tls != nil {
		args = append([]string{"--port", "0", "--tls-port", strconv.Itoa(r.port)}, r.tls...)
	}
	args = append(args,
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", r.dir,
		"--daemonize", "no",
		"--loglevel", "warning",
	)
	args = append(args, r.args...)
	if r.conf != "" {
		args = append([]string{r.conf}, args...)
	}
	cmd := exec.Command("redis-server", args...)
	dieWithParent(cmd)
	out := &SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting redis-server: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()

	deadline := time.Now().Add(redisStartLimit)
	for {
		select {
		case <-done:
			return fmt.Errorf("redis-server on port %d exited at start: %s", r.port, out.String())
		default:
		}
		if r.ping() == nil {
			r.proc, r.done = cmd, done
			return nil
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			return fmt.Errorf("redis-server on port %d did not answer PING within %v: %s", r.port, redisStartLimit, out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// need fails the test if program is not on PATH.
func need(t testing.TB, program string) {
	t.Helper()
	if _, err := exec.LookPath(program); err != nil {
		t.Fatalf("%s is not on PATH; install it (Debian: apt-get install -y redis-server): %v", program, err)
	}
}

// ping sends PING over RESP and expects PONG.
func (r *Redis) ping() error {
	reply, err := r.command("PING")
	if err == nil && reply != "PONG" {
		err = fmt.Errorf("PING answered %q", reply)
	}
	return err
}

// command sends one inline command and returns its reply, which must be a
// simple string, an integer or a bulk string.
func (r *Redis) command(cmd string) (string, error) {
	d := &net.Dialer{Timeout: time.Second}
	var c net.Conn
	var err error
	if r.RootCAs != nil {
		c, err = tls.DialWithDialer(d, "tcp", r.Addr, &tls.Config{RootCAs: r.RootCAs, ServerName: "127.0.0.1"})
	} else {
		c, err = d.Dial("tcp", r.Addr)
	}
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte(cmd + "\r\n")); err != nil {
		return "", err
	}
	rd := bufio.NewReader(c)
	line, err := rd.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	switch {
	case strings.HasPrefix(line, "+"), strings.HasPrefix(line, ":"):
		return line[1:], nil
	case strings.HasPrefix(line, "$"):
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", fmt.Errorf("%s: bad reply %q", cmd, line)
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(rd, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return "", fmt.Errorf("%s answered %q", cmd, line)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
