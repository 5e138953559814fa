package audit_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/audit"
	"golang.org/x/mod/sumdb/note"
)

func rusage() (u, s time.Duration) {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}

// fsType names the file system dir is on: the driver's kernel CPU
// depends on it (README, audit log figures).
func fsType(dir string) string {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return err.Error()
	}
	switch uint64(st.Type) {
	case 0xef53:
		return "ext2/3/4"
	case 0x01021994:
		return "tmpfs"
	case 0x794c7630:
		return "overlayfs"
	case 0x58465342:
		return "xfs"
	case 0x9123683e:
		return "btrfs"
	}
	return fmt.Sprintf("statfs type %#x", uint64(st.Type))
}

// BenchmarkAppendBatch: the CPU (getrusage, user and system) of one batch
// of k entries of ~800 bytes, the size of a pub's entry: what each store
// (tlog: StoreTlog, tessera: Tessera's POSIX driver) costs per batch and
// per entry, whatever the server does (README, audit log figures). The
// stores alternate for each k. The log is in $TMPDIR (its file system is
// logged); SIGIL_AUDIT_BATCH sets Config.BatchMaxAge (default
// DefaultBatchMaxAge).
func BenchmarkAppendBatch(b *testing.B) {
	for _, k := range []int{1, 16, 64, 256, 1024} {
		for _, st := range testStores {
			b.Run(st.name+"/"+strconv.Itoa(k), func(b *testing.B) { benchAppendBatch(b, st.store, k) })
		}
	}
}

func benchAppendBatch(b *testing.B, store audit.Store, k int) {
	{
		{
			skey, _, _ := audit.GenerateKey("sigil.test/audit")
			signer, _ := note.NewSigner(skey)
			cfg := audit.Config{Dir: b.TempDir(), Signer: signer, Store: store}
			if s := os.Getenv("SIGIL_AUDIT_BATCH"); s != "" {
				d, err := time.ParseDuration(s)
				if err != nil {
					b.Fatal(err)
				}
				cfg.BatchMaxAge = d
			}
			b.Logf("log on %s", fsType(cfg.Dir))
			l, err := audit.Open(context.Background(), cfg)
			if err != nil {
				b.Fatal(err)
			}
			frame := strings.Repeat("x", 700)
			u0, s0 := rusage()
			b.ResetTimer()
			for range b.N {
				fs := make([]audit.Future, k)
				for j := range fs {
					fs[j] = l.Add(context.Background(), &audit.Entry{V: 1, Kind: audit.KindServer, Time: 1, Frame: frame})
				}
				for _, f := range fs {
					if _, err := f(); err != nil {
						b.Fatal(err)
					}
				}
			}
			u1, s1 := rusage()
			// Close waits for a checkpoint (up to its interval): not a batch's time.
			b.StopTimer()
			if err := l.Close(context.Background()); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64((u1-u0).Microseconds())/float64(b.N), "user-us/batch")
			b.ReportMetric(float64((s1-s0).Microseconds())/float64(b.N), "sys-us/batch")
			b.ReportMetric(float64((u1-u0+s1-s0).Microseconds())/float64(b.N*k), "cpu-us/entry")
		}
	}
}
