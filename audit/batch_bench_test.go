package audit_test

import (
	"context"
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

// BenchmarkAppendBatch: the CPU (getrusage, user and system) of one batch
// of k entries of ~800 bytes, the size of a pub's entry: what Tessera's
// POSIX driver costs per batch and per entry, whatever the server does
// (README, audit log figures).
func BenchmarkAppendBatch(b *testing.B) {
	for _, k := range []int{1, 16, 64, 256, 1024} {
		b.Run(strconv.Itoa(k), func(b *testing.B) {
			skey, _, _ := audit.GenerateKey("sigil.test/audit")
			signer, _ := note.NewSigner(skey)
			l, err := audit.Open(context.Background(), audit.Config{Dir: b.TempDir(), Signer: signer})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close(context.Background())
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
			b.ReportMetric(float64((u1-u0).Microseconds())/float64(b.N), "user-us/batch")
			b.ReportMetric(float64((s1-s0).Microseconds())/float64(b.N), "sys-us/batch")
			b.ReportMetric(float64((u1-u0+s1-s0).Microseconds())/float64(b.N*k), "cpu-us/entry")
		})
	}
}
