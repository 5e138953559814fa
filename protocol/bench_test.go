package protocol_test

import (
	"context"
	"crypto/ed25519"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/sigil-ws/sigil/protocol"
)

// Ratios are measured against a baseline interleaved with the measured
// operation in the same loop, so that both see the same machine noise:
// every iteration runs the operation once and the baseline once, each timed
// and in alternating order,
// and the benchmark reports the ratio of the totals ("x-ed25519-verify" or
// "x-ed25519-sign") next to the operation's own "op-ns".

type interleave struct {
	op, base time.Duration
}

// run times op and base once each, alternating which goes first so that
// neither always runs on the caches the other warmed.
func (il *interleave) run(i int, op, base func()) {
	if i%2 == 0 {
		t0 := time.Now()
		op()
		t1 := time.Now()
		base()
		t2 := time.Now()
		il.op += t1.Sub(t0)
		il.base += t2.Sub(t1)
		return
	}
	t0 := time.Now()
	base()
	t1 := time.Now()
	op()
	t2 := time.Now()
	il.base += t1.Sub(t0)
	il.op += t2.Sub(t1)
}

func (il *interleave) report(b *testing.B, unit string) {
	b.ReportMetric(float64(il.op)/float64(il.base), unit)
	b.ReportMetric(float64(il.op.Nanoseconds())/float64(b.N), "op-ns")
	b.ReportMetric(float64(il.base.Nanoseconds())/float64(b.N), "base-ns")
}

var pubBody = []byte(`{"text":"hello, world"}`)

func pubEnv() *protocol.Envelope {
	return &protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.lobby", Body: pubBody}
}

// signingInput returns the JWS signing input and signature of a frame, for
// the raw-verify baseline over exactly the same bytes.
func signingInput(frame []byte) (input, sig []byte) {
	last := 0
	for i, c := range frame {
		if c == '.' {
			last = i
		}
	}
	sig = make([]byte, 64)
	if _, err := b64.Decode(sig, frame[last+1:]); err != nil {
		panic(err)
	}
	return frame[:last], sig
}

func benchVerify(b *testing.B, alg string) {
	f := newFixture(b, alg)
	s := f.hello(b)
	edf := newFixture(b, "EdDSA") // baseline key: raw Ed25519 over the same frame size
	edPub := edf.client.Public().Key().(ed25519.PublicKey)
	ctx := context.Background()
	const batch = 1024
	frames := make([][]byte, batch)
	inputs := make([][2][]byte, batch)
	var il interleave
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%batch == 0 {
			b.StopTimer()
			for j := range frames {
				fr, err := f.signer.Sign(pubEnv())
				must(b, err)
				frames[j] = fr
				efr, err := edf.signer.Sign(pubEnv())
				must(b, err)
				in, sig := signingInput(efr)
				inputs[j] = [2][]byte{in, sig}
			}
			b.StartTimer()
		}
		il.run(i,
			func() {
				if _, err := f.verifier.Verify(ctx, frames[i%batch], s); err != nil {
					b.Fatal(err)
				}
			},
			func() {
				if !ed25519.Verify(edPub, inputs[i%batch][0], inputs[i%batch][1]) {
					b.Fatal("baseline verify failed")
				}
			})
	}
	il.report(b, "x-ed25519-verify")
}

// BenchmarkVerifyPipeline runs the full server pipeline on a publish: size,
// form, header, signature, strict claims, session, freshness, replay,
// revocation and policy.
func BenchmarkVerifyPipelineEdDSA(b *testing.B) { benchVerify(b, "EdDSA") }
func BenchmarkVerifyPipelineES256(b *testing.B) { benchVerify(b, "ES256") }

// BenchmarkSignEdDSA measures ClientSigner.Sign on a publish (id, ts, seq,
// marshal, JWS) against raw ed25519.Sign over the same signing input.
func BenchmarkSignEdDSA(b *testing.B) {
	f := newFixture(b, "EdDSA")
	priv := ed25519.NewKeyFromSeed(make([]byte, 32))
	fr, err := f.signer.Sign(pubEnv())
	must(b, err)
	input, _ := signingInput(fr)
	var il interleave
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		il.run(i,
			func() {
				if _, err := f.signer.Sign(pubEnv()); err != nil {
					b.Fatal(err)
				}
			},
			func() { ed25519.Sign(priv, input) })
	}
	il.report(b, "x-ed25519-sign")
}

// BenchmarkGoJoseSignEdDSA is go-jose's Signer.Sign plus CompactSerialize
// alone, over a publish payload: the floor under ClientSigner.Sign.
func BenchmarkGoJoseSignEdDSA(b *testing.B) {
	f := newFixture(b, "EdDSA")
	priv := ed25519.NewKeyFromSeed(make([]byte, 32))
	fr, err := f.signer.Sign(pubEnv())
	must(b, err)
	input, _ := signingInput(fr)
	payload, err := protocol.UnsafeClaims(fr)
	must(b, err)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: priv},
		(&jose.SignerOptions{}).WithType(protocol.TypClient).WithHeader("kid", "k1"))
	must(b, err)
	var il interleave
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		il.run(i,
			func() {
				obj, err := signer.Sign(payload)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := obj.CompactSerialize(); err != nil {
					b.Fatal(err)
				}
			},
			func() { ed25519.Sign(priv, input) })
	}
	il.report(b, "x-ed25519-sign")
}

// BenchmarkGoJoseVerifyEdDSA is go-jose's ParseSignedCompact + Verify alone,
// on the same kind of fresh frames: the floor under the pipeline.
func BenchmarkGoJoseVerifyEdDSA(b *testing.B) {
	f := newFixture(b, "EdDSA")
	pub := f.client.Public().Key().(ed25519.PublicKey)
	const batch = 1024
	frames := make([]string, batch)
	inputs := make([][2][]byte, batch)
	var il interleave
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if i%batch == 0 {
			b.StopTimer()
			for j := range frames {
				fr, err := f.signer.Sign(pubEnv())
				must(b, err)
				frames[j] = string(fr)
				in, sig := signingInput(fr)
				inputs[j] = [2][]byte{in, sig}
			}
			b.StartTimer()
		}
		il.run(i,
			func() {
				jws, err := jose.ParseSignedCompact(frames[i%batch], []jose.SignatureAlgorithm{jose.EdDSA})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := jws.Verify(pub); err != nil {
					b.Fatal(err)
				}
			},
			func() { ed25519.Verify(pub, inputs[i%batch][0], inputs[i%batch][1]) })
	}
	il.report(b, "x-ed25519-verify")
}

// BenchmarkSealBody and BenchmarkOpenBody measure body encryption of a
// typical chat body.
func BenchmarkSealBody(b *testing.B) {
	k, _ := protocol.NewContentKey(protocol.ScopeSession, nil)
	body := []byte(`{"text":"hello, world, this is a typical chat message"}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := protocol.SealBody(k, body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpenBody(b *testing.B) {
	k, _ := protocol.NewContentKey(protocol.ScopeSession, nil)
	ring := protocol.NewKeyRing(nil)
	ring.Add(k, time.Time{})
	enc, _ := protocol.SealBody(k, []byte(`{"text":"hello, world, this is a typical chat message"}`))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := protocol.OpenBody(enc, ring, protocol.ScopeSession); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSignDeliverEdDSA measures ServerSigner.SignBody on the deliver
// of a publish (the server's per-publish signing: envelope, delivery body
// with the sender's frame, JWS) against raw ed25519.Sign over the same
// signing input.
func BenchmarkSignDeliverEdDSA(b *testing.B) {
	f := newFixture(b, "EdDSA")
	inner, err := f.signer.Sign(pubEnv())
	must(b, err)
	jwk, err := f.client.Public().MarshalJSON()
	must(b, err)
	ss := &protocol.ServerSigner{Key: f.server}
	deliver := func() []byte {
		fr, err := ss.SignBody(&protocol.Envelope{Action: protocol.ActDeliver, Channel: "rooms.lobby"},
			protocol.DeliverBody{Frame: string(inner), JWK: jwk, Sub: "alice"})
		if err != nil {
			b.Fatal(err)
		}
		return fr
	}
	input, _ := signingInput(deliver())
	priv := ed25519.NewKeyFromSeed(make([]byte, 32))
	var il interleave
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		il.run(i, func() { deliver() }, func() { ed25519.Sign(priv, input) })
	}
	il.report(b, "x-ed25519-sign")
}
