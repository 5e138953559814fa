package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/sigil-ws/sigil/internal/sigiltest"
	"github.com/sigil-ws/sigil/server"
)

// openPTY opens a pseudo-terminal: the controlling side and the terminal
// a child process reads as its stdin.
func openPTY(t *testing.T) (ptm, pts *os.File) {
	t.Helper()
	ptm, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	must(t, err)
	var unlock, n uint32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, ptm.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		t.Fatal(e)
	}
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, ptm.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); e != 0 {
		t.Fatal(e)
	}
	pts, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	must(t, err)
	t.Cleanup(func() { ptm.Close(); pts.Close() })
	return ptm, pts
}

// TestPasswordPromptDoesNotEcho: on a terminal, sigil user add asks for the
// password twice without echoing it (golang.org/x/term), and the user can
// log in with it; from a pipe it reads stdin, as the other tests do.
func TestPasswordPromptDoesNotEcho(t *testing.T) {
	ptm, pts := openPTY(t)
	users := filepath.Join(t.TempDir(), "users.json")
	const pw = "a secret never shown"
	cmd := sigil(t, "", "user", "add", "--users", users, "dora")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = pts, pts, pts
	must(t, cmd.Start())
	var out sigiltest.SyncBuffer
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := ptm.Read(buf)
			out.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}()
	sigiltest.Eventually(t, "the prompt", func() bool { return strings.Contains(out.String(), "new password for dora: ") })
	fmt.Fprint(ptm, pw+"\r")
	sigiltest.Eventually(t, "the second prompt", func() bool { return strings.Contains(out.String(), "again: ") })
	fmt.Fprint(ptm, pw+"\r")
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("user add: %v\n%s", err, out.String())
		}
	case <-time.After(60 * time.Second): // a safety limit for a stuck machine
		_ = cmd.Process.Kill()
		t.Fatalf("user add still running:\n%s", out.String())
	}
	sigiltest.Eventually(t, "the result", func() bool { return strings.Contains(out.String(), "user dora: add done") })
	if strings.Contains(out.String(), "secret") {
		t.Fatalf("the password was echoed:\n%q", out.String())
	}
	data, err := os.ReadFile(users)
	must(t, err)
	doc, err := server.ParseUsers(data)
	must(t, err)
	u, ok := doc.Lookup("dora")
	if !ok || !server.CheckPassword(u.Hash, pw) {
		t.Fatalf("dora's password is not the one typed: %+v", u)
	}
}
