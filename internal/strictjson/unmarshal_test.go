package strictjson

import (
	"encoding/json"
	"strings"
	"testing"
)

type inner struct {
	A string `json:"a"`
}

type outer struct {
	Name  string              `json:"name"`
	N     int                 `json:"n,omitempty"`
	In    inner               `json:"in"`
	Ptr   *inner              `json:"ptr"`
	List  []inner             `json:"list"`
	Map   map[string]inner    `json:"map"`
	Raw   json.RawMessage     `json:"raw"`
	Any   any                 `json:"any"`
	Tags  []string            `json:"tags"`
	Skip  string              `json:"-"`
	inner `json:",omitempty"` // unexported, tagged: skipped by encoding/json
}

func TestUnmarshal(t *testing.T) {
	good := `{"name":"x","n":2,"in":{"a":"1"},"ptr":{"a":"2"},"list":[{"a":"3"}],"map":{"k":{"a":"4"}},"raw":{"Any":1,"any":2},"any":{"A":1},"tags":["t"]}`
	var o outer
	if err := Unmarshal([]byte(good), &o, nil); err != nil {
		t.Fatalf("good: %v", err)
	}
	if o.Name != "x" || o.N != 2 || o.In.A != "1" || o.Ptr.A != "2" || o.List[0].A != "3" || o.Map["k"].A != "4" || string(o.Raw) != `{"Any":1,"any":2}` {
		t.Fatalf("decoded %+v", o)
	}
	bad := map[string]string{
		`{"name":"x","name":"y"}`:        "duplicate",
		`{"name":"x","\u006eame":"y"}`:   "escaped duplicate",
		`{"Name":"x"}`:                   "case variant",
		`{"NAME":"x"}`:                   "case variant",
		`{"in":{"A":"1"}}`:               "nested case variant",
		`{"ptr":{"a":"1","b":2}}`:        "nested unknown",
		`{"list":[{"a":"1"},{"A":"2"}]}`: "case variant in a slice",
		`{"map":{"k":{"x":1}}}`:          "unknown in a map value",
		`{"extra":1}`:                    "unknown",
		`{"Skip":"x"}`:                   "a field tagged - is unknown",
		`{"n":1e400}`:                    "out of range",
		`null`:                           "null for a struct",
		`[]`:                             "array for a struct",
		`{"name":1}`:                     "mistyped",
		"{\"name\":\"\xff\"}":            "invalid UTF-8",
		`{"n\u212a":1}`:                  "unknown (Kelvin sign)",
		`{"in":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}`: "too deep",
	}
	for in, why := range bad {
		var o outer
		if err := Unmarshal([]byte(in), &o, nil); err == nil {
			t.Errorf("Unmarshal(%s) = nil; want an error (%s)", in, why)
		}
	}
	// A case variant is refused even when unknown members are allowed, or
	// encoding/json would fill the field with it.
	type peek struct {
		ID string `json:"id"`
	}
	var p peek
	if err := Unmarshal([]byte(`{"id":"a","other":[1,{"x":2}]}`), &p, &Options{AllowUnknown: true}); err != nil || p.ID != "a" {
		t.Fatalf("AllowUnknown: %v %+v", err, p)
	}
	for _, in := range []string{`{"ID":"b"}`, `{"iD":"b","id":"a"}`, "{\"\u0130d\":\"b\"}"} {
		var p peek
		err := Unmarshal([]byte(in), &p, &Options{AllowUnknown: true})
		if err == nil && p.ID != "" {
			t.Errorf("AllowUnknown %s: filled ID = %q", in, p.ID)
		}
		if in != "{\"\u0130d\":\"b\"}" && err == nil {
			t.Errorf("AllowUnknown %s: no error for a case variant", in)
		}
	}
	var sk struct {
		K string `json:"k"`
	}
	if err := Unmarshal([]byte("{\"\u212a\":\"kelvin\"}"), &sk, &Options{AllowUnknown: true}); err == nil || sk.K != "" {
		t.Errorf("Kelvin sign K: err %v, K = %q", err, sk.K)
	}
	var m map[string]int
	if err := Unmarshal([]byte(`{"a":1,"A":2}`), &m, nil); err != nil || m["a"] != 1 || m["A"] != 2 {
		t.Errorf("map keys are exact: %v %v", err, m)
	}
	if err := Unmarshal([]byte(`{}`), outer{}, nil); err == nil {
		t.Error("a non-pointer target is refused")
	}
}

func FuzzUnmarshal(f *testing.F) {
	f.Add([]byte(`{"name":"x","in":{"a":"1"},"list":[{"a":"3"}],"map":{"k":{"a":"4"}},"raw":[1]}`))
	f.Add([]byte(`{"Name":"x"}`))
	f.Add([]byte(`{"in":{"a":"1","a":"2"}}`))
	for _, s := range vectorTexts(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var o outer
		if err := Unmarshal(data, &o, nil); err != nil {
			return
		}
		// Accepted: strict, and encoding/json reads exactly the same value.
		if Valid(data, DefaultMaxDepth) != nil {
			t.Fatal("accepted a text that is not strict JSON")
		}
		var o2 outer
		if err := json.Unmarshal(data, &o2); err != nil {
			t.Fatalf("encoding/json refuses what Unmarshal accepted: %v", err)
		}
		b1, _ := json.Marshal(o)
		b2, _ := json.Marshal(o2)
		if string(b1) != string(b2) {
			t.Fatalf("decoded differently:\n%s\n%s", b1, b2)
		}
	})
}
