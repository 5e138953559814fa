package audit

import (
	"strings"
	"testing"
)

// isPlainTable is isPlain a byte at a time, through the table.
func isPlainTable(s string) bool {
	for i := 0; i < len(s); i++ {
		if !plainByte[s[i]] {
			return false
		}
	}
	return true
}

// isPlain's words agree with the table: every byte value, at every
// position of a word and of the tail, among plain bytes.
func TestIsPlainMatchesTable(t *testing.T) {
	base := strings.Repeat("eyJhbGciOiJFZERTQSJ9.", 2) // plain, 42 bytes
	for n := 0; n <= len(base); n++ {
		for pos := 0; pos < n; pos++ {
			for c := 0; c < 256; c++ {
				s := base[:pos] + string(rune(0)) + base[pos+1:n]
				s = s[:pos] + string([]byte{byte(c)}) + s[pos+1:]
				if got, want := isPlain(s), isPlainTable(s); got != want {
					t.Fatalf("isPlain(%q) = %v, the table says %v", s, got, want)
				}
			}
		}
	}
}

func FuzzIsPlain(f *testing.F) {
	f.Add("eyJhbGciOiJFZERTQSJ9.eyJ0eXAiOiJzaWdpbCJ9.c2ln")
	f.Add("tab\there \"quoted\" \\ é \u2028\x7f\x1f")
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := isPlain(s), isPlainTable(s); got != want {
			t.Fatalf("isPlain(%q) = %v, the table says %v", s, got, want)
		}
	})
}
