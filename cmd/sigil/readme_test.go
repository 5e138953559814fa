package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/internal/sigiltest"
)

// readmeWalkthrough returns the shell block of README.md that follows the
// <!-- walkthrough --> marker.
func readmeWalkthrough(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("../../README.md")
	must(t, err)
	_, rest, ok := strings.Cut(string(data), "<!-- walkthrough -->\n```sh\n")
	if !ok {
		t.Fatal("README.md has no <!-- walkthrough --> shell block")
	}
	block, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatal("the walkthrough block is not closed")
	}
	return block
}

// TestREADMEWalkthrough runs README.md's shell walkthrough verbatim, under
// bash and under sh, in a fresh directory with a fresh data dir, on a free
// port, with this test binary as the sigil on PATH.
func TestREADMEWalkthrough(t *testing.T) {
	script := readmeWalkthrough(t)
	for _, shell := range []string{"bash", "sh"} {
		t.Run(shell, func(t *testing.T) {
			t.Parallel()
			if _, err := exec.LookPath(shell); err != nil {
				t.Fatalf("%s: %v", shell, err)
			}
			dir := t.TempDir()
			bin := filepath.Join(dir, "bin")
			must(t, os.Mkdir(bin, 0o755))
			must(t, os.Symlink(os.Args[0], filepath.Join(bin, "sigil")))
			work := filepath.Join(dir, "work")
			must(t, os.Mkdir(work, 0o755))
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			must(t, err)
			addr := ln.Addr().String()
			ln.Close()

			cmd := exec.Command(shell, "-e", "-c", script)
			cmd.Dir = work
			env := []string{"SIGIL_TEST_MAIN=1", "SIGIL_ADDR=" + addr, "HOME=" + dir, "XDG_CONFIG_HOME=" + filepath.Join(dir, "config"),
				"PATH=" + bin + string(os.PathListSeparator) + os.Getenv("PATH")}
			for _, kv := range os.Environ() {
				if k, _, _ := strings.Cut(kv, "="); !strings.HasPrefix(k, "SIGIL_") && k != "HOME" && k != "PATH" && k != "XDG_CONFIG_HOME" {
					env = append(env, kv)
				}
			}
			cmd.Env = env
			var out sigiltest.SyncBuffer
			cmd.Stdout, cmd.Stderr = &out, &out
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			cmd.WaitDelay = 10 * time.Second // a server left running must not hold the output open
			must(t, cmd.Start())
			// Whatever happens, nothing the script started outlives the test.
			t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err = <-done:
			case <-time.After(2 * time.Minute): // a safety limit for a stuck machine
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				<-done
				err = fmt.Errorf("still running after 2 minutes")
			}
			logs := func() string {
				var b bytes.Buffer
				for _, f := range []string{"serve.log", "listen.log", "archive.jsonl"} {
					data, _ := os.ReadFile(filepath.Join(work, f))
					fmt.Fprintf(&b, "--- %s\n%s", f, data)
				}
				return b.String()
			}
			if err != nil {
				t.Fatalf("walkthrough: %v\n%s\n%s", err, out.String(), logs())
			}
			if o := out.String(); !strings.Contains(o, "1 verified, 0 failed") || !strings.Contains(o, "alice signed pub rooms.lobby") ||
				!strings.Contains(o, "hello from the shell") {
				t.Fatalf("walkthrough output:\n%s\n%s", o, logs())
			}
		})
	}
}

// TestREADMEGoSnippets: every Go block of README.md is, word for word, the
// part between "// README begin" and "// README end" of an Example in a
// package's example_readme_test.go, and every such part is in the README,
// so the README's Go compiles (go vet and go test build the examples).
func TestREADMEGoSnippets(t *testing.T) {
	data, err := os.ReadFile("../../README.md")
	must(t, err)
	var blocks []string
	for rest := string(data); ; {
		var ok bool
		if _, rest, ok = strings.Cut(rest, "```go\n"); !ok {
			break
		}
		var block string
		block, rest, _ = strings.Cut(rest, "```")
		blocks = append(blocks, strings.TrimSuffix(block, "\n"))
	}
	files, err := filepath.Glob("../../*/example_readme_test.go")
	must(t, err)
	examples := map[string]string{} // snippet → file
	for _, f := range files {
		src, err := os.ReadFile(f)
		must(t, err)
		for rest := string(src); ; {
			var ok bool
			if _, rest, ok = strings.Cut(rest, "\t// README begin\n"); !ok {
				break
			}
			var region string
			region, rest, _ = strings.Cut(rest, "\t// README end\n")
			lines := strings.Split(strings.TrimSuffix(region, "\n"), "\n")
			for i, l := range lines {
				lines[i] = strings.TrimPrefix(l, "\t")
			}
			examples[strings.Join(lines, "\n")] = f
		}
	}
	if len(blocks) == 0 || len(examples) == 0 {
		t.Fatalf("%d Go blocks in the README, %d README examples", len(blocks), len(examples))
	}
	inReadme := map[string]bool{}
	for _, b := range blocks {
		if _, ok := examples[b]; !ok {
			t.Errorf("README Go block is no example's README part (edit it in an example_readme_test.go, then copy it):\n%s", b)
		}
		inReadme[b] = true
	}
	for ex, f := range examples {
		if !inReadme[ex] {
			t.Errorf("%s: README part not in README.md:\n%s", f, ex)
		}
	}
}
