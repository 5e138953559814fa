package protocol_test

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/sigil-ws/sigil/protocol"
)

// TestCloseCodesMatchSpec reads the close-code table of spec.md §12.3 and
// checks that protocol.CloseCode knows every row, with the same reconnect
// rule, and that the spec lists every code protocol knows.
func TestCloseCodesMatchSpec(t *testing.T) {
	spec, err := os.ReadFile("../spec.md")
	must(t, err)
	start := strings.Index(string(spec), "12.3. **Close codes**")
	if start < 0 {
		t.Fatal("spec.md has no §12.3 close-code table")
	}
	rules := map[string]protocol.Reconnect{
		"no":                    protocol.ReconnectNever,
		"no (client bug)":       protocol.ReconnectNever,
		"yes, with backoff":     protocol.ReconnectBackoff,
		"only with a new token": protocol.ReconnectNewToken,
		"only after refreshing or obtaining a new token": protocol.ReconnectNewToken,
		"never (re-authenticate as a person)":            protocol.ReconnectReauthenticate,
	}
	row := regexp.MustCompile(`(?m)^\| (\d{4}) \| ([^|]+) \| ([^|]+) \|$`)
	inSpec := map[protocol.CloseCode]bool{}
	for _, m := range row.FindAllStringSubmatch(string(spec[start:]), -1) {
		n, _ := strconv.Atoi(m[1])
		c := protocol.CloseCode(n)
		want, ok := rules[strings.TrimSpace(m[3])]
		if !ok {
			t.Errorf("§12.3 %d: unknown reconnect column %q", n, m[3])
			continue
		}
		inSpec[c] = true
		if c.Meaning() == "unknown code" {
			t.Errorf("§12.3 lists %d; protocol does not know it", n)
		}
		if got := c.Reconnect(); got != want {
			t.Errorf("%v: Reconnect() = %v; spec says %q", c, got, strings.TrimSpace(m[3]))
		}
	}
	if len(inSpec) < 13 {
		t.Fatalf("found only %d rows in §12.3", len(inSpec))
	}
	for _, c := range []protocol.CloseCode{
		protocol.CloseNormal, protocol.CloseGoingAway, protocol.CloseUnsupported, protocol.CloseInvalidUTF8,
		protocol.ClosePolicy, protocol.CloseTooBig, protocol.CloseHelloTimeout, protocol.CloseHelloRejected,
		protocol.CloseTokenExpired, protocol.CloseRevoked, protocol.CloseKicked, protocol.CloseSlowConsumer, protocol.CloseServerError,
	} {
		if !inSpec[c] {
			t.Errorf("%v is not in the table of spec.md §12.3", c)
		}
	}
	// Codes outside the table (§12.3): 1006 and other 1xxx codes reconnect
	// with backoff; an unknown 4xxx code does not reconnect.
	for c, want := range map[protocol.CloseCode]protocol.Reconnect{
		protocol.CloseAbnormal: protocol.ReconnectBackoff, 1011: protocol.ReconnectBackoff, 1012: protocol.ReconnectBackoff,
		4999: protocol.ReconnectNever, 4100: protocol.ReconnectNever,
	} {
		if got := c.Reconnect(); got != want {
			t.Errorf("%v: Reconnect() = %v; want %v", c, got, want)
		}
	}
	if s := protocol.CloseRevoked.String(); s != "4003 (session revoked)" {
		t.Errorf("String() = %q", s)
	}
}

func TestRejectionClose(t *testing.T) {
	for _, c := range []struct {
		code  protocol.Code
		hello bool
		want  protocol.CloseCode
	}{
		{protocol.CodeTokenExpired, true, protocol.CloseTokenExpired},
		{protocol.CodeTokenRevoked, true, protocol.CloseRevoked},
		{protocol.CodeBadToken, true, protocol.CloseHelloRejected},
		{protocol.CodeStale, true, protocol.CloseHelloRejected},
		{protocol.CodeUnavailable, true, protocol.CloseServerError},
		{protocol.CodeInternal, true, protocol.CloseServerError},
		{protocol.CodeUnavailable, false, 0},
		{protocol.CodeTokenExpired, false, protocol.CloseTokenExpired},
		{protocol.CodeTokenRevoked, false, protocol.CloseRevoked},
		{protocol.CodeStale, false, 0},
		{protocol.CodeForbidden, false, 0},
	} {
		if got := protocol.RejectionClose(c.code, c.hello); got != c.want {
			t.Errorf("RejectionClose(%s, %v) = %d; want %d", c.code, c.hello, got, c.want)
		}
	}
}
