package strictjson

import (
	stdjson "encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	josejson "github.com/go-jose/go-jose/v4/json"
)

func TestValid(t *testing.T) {
	good := []string{
		`{}`, `[]`, `0`, `-0.5e+10`, `"a\u00e9\ud83d\ude00"`, ` {"a":[1,true,false,null,{"b":"c"}]} `,
		`{"a":1,"A":2}`, // case-variant names are distinct names; the caller rejects unknown ones
	}
	bad := map[string]string{
		`{"a":1,"a":2}`:       "duplicate",
		`{"a":1,"\u0061":2}`:  "duplicate after unescaping",
		`{"a":{"b":1,"b":1}}`: "nested duplicate",
		`[1,]`:                "trailing comma",
		`01`:                  "leading zero",
		`"\ud800"`:            "lone surrogate",
		"\"\xff\"":            "invalid UTF-8",
		`{"a":1} x`:           "trailing data",
		`[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]`: "too deep",
		`{'a':1}`:           "single quotes",
		`"a` + "\x01" + `"`: "control character",
		`NaN`:               "not JSON",
		``:                  "empty",
	}
	for _, g := range good {
		if err := Valid([]byte(g), 10); err != nil {
			t.Errorf("Valid(%q) = %v, want nil", g, err)
		}
	}
	for b, why := range bad {
		if err := Valid([]byte(b), 10); err == nil {
			t.Errorf("Valid(%q) = nil, want error (%s)", b, why)
		}
	}
}

func TestManyKeysUsesSet(t *testing.T) {
	var sb strings.Builder
	sb.WriteString("{")
	for i := 0; i < 1000; i++ {
		if i > 0 {
			sb.WriteString(",")
		}
		sb.WriteString(`"k`)
		sb.WriteString(strings.Repeat("x", i%7))
		sb.WriteString(string(rune('a' + i%26)))
		sb.WriteString(`_`)
		sb.WriteString(stdjson.Number(string(rune('0' + i%10))).String())
		sb.WriteString(string(rune('0' + (i/10)%10)))
		sb.WriteString(string(rune('0' + (i/100)%10)))
		sb.WriteString(`":1`)
	}
	ok := sb.String() + "}"
	if err := Valid([]byte(ok), 4); err != nil {
		t.Fatal(err)
	}
	dup := sb.String() + `,"ka_000":2}`
	if err := Valid([]byte(dup), 4); err == nil {
		t.Fatal("duplicate in a large object not found")
	}
}

func TestMembers(t *testing.T) {
	var names, values []string
	err := Members([]byte(`{"a":"x","b\n":{"c":[1,2]}}`), 8, func(n, v []byte) error {
		names = append(names, string(n))
		values = append(values, string(v))
		return nil
	})
	if err != nil || strings.Join(names, "|") != "a|b\n" || values[1] != `{"c":[1,2]}` {
		t.Fatalf("Members = %v %q %q", err, names, values)
	}
	if err := Members([]byte(`[1]`), 8, nil); err != ErrNotObject {
		t.Fatalf("array: %v", err)
	}
	s, err := String([]byte(`"a\"\u00e9"`))
	if err != nil || s != "a\"é" {
		t.Fatalf("String = %q %v", s, err)
	}
}

// FuzzValid checks Valid against encoding/json (grammar) and go-jose's
// strict decoder (duplicates): whatever Valid accepts, both accept, and
// whatever both accept without \u escapes within the depth limit, Valid
// accepts too.
func FuzzValid(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":[1,{"b":null}]}`, `{"a":1,"a":2}`, `"\ud83d\ude00"`, `-1.5e3`, `[1,2`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		err := Valid(data, 64)
		std := stdjson.Valid(data) && utf8.Valid(data)
		var v any
		jose := josejson.Unmarshal(data, &v) == nil
		if err == nil && (!std || !jose) {
			t.Fatalf("Valid accepted %q; std=%v go-jose=%v", data, std, jose)
		}
		if err != nil && std && jose && !strings.Contains(string(data), `\u`) && depth(data) <= 64 {
			t.Fatalf("Valid rejected %q: %v", data, err)
		}
	})
}

func depth(data []byte) int {
	d, max, in, esc := 0, 0, false, false
	for _, c := range data {
		switch {
		case in && esc:
			esc = false
		case in && c == '\\':
			esc = true
		case c == '"':
			in = !in
		case !in && (c == '{' || c == '['):
			d++
			max = maxInt(max, d)
		case !in && (c == '}' || c == ']'):
			d--
		}
	}
	return max
}

func maxInt(a, b int) int {
	if a > b {
		return a
	}
	return b
}
