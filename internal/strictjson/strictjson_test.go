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
	for _, s := range vectorTexts(f) {
		f.Add(s)
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

// FuzzMembers: Members accepts exactly the strict JSON objects, and hands
// out each member once, with a value that is itself strict JSON.
func FuzzMembers(f *testing.F) {
	f.Add([]byte(`{"a":"x","b\n":{"c":[1,2]}}`))
	f.Add([]byte(`{"a":1,"\u0061":2}`))
	for _, s := range vectorTexts(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		seen := map[string]bool{}
		err := Members(data, 32, func(name, value []byte) error {
			if seen[string(name)] {
				t.Fatalf("member %q handed out twice", name)
			}
			seen[string(name)] = true
			if err := Valid(value, 32); err != nil {
				t.Fatalf("member %q: value %q is not strict JSON: %v", name, value, err)
			}
			return nil
		})
		isObject := len(strings.TrimLeft(string(data), " \t\r\n")) > 0 && strings.TrimLeft(string(data), " \t\r\n")[0] == '{'
		if (err == nil) != (Valid(data, 32) == nil && isObject) {
			t.Fatalf("Members = %v, but Valid = %v and object = %v", err, Valid(data, 32), isObject)
		}
		if err == nil {
			var m map[string]stdjson.RawMessage
			if e := stdjson.Unmarshal(data, &m); e != nil || len(m) != len(seen) {
				t.Fatalf("encoding/json reads %d members (%v); Members %d", len(m), e, len(seen))
			}
		}
	})
}

// FuzzString: String decodes exactly what encoding/json decodes, for the
// strings Valid accepts.
func FuzzString(f *testing.F) {
	for _, s := range []string{`"a"`, `"a\"\u00e9"`, `"\ud83d\ude00"`, `"\ud800"`, `"x`, `"\/\b\f\n\r\t"`} {
		f.Add([]byte(s))
	}
	for _, s := range vectorTexts(f) {
		_ = Members(s, 32, func(_, value []byte) error {
			if len(value) > 0 && value[0] == '"' {
				f.Add(append([]byte(nil), value...))
			}
			return nil
		})
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		s, err := String(raw)
		if err != nil {
			return
		}
		if Valid(raw, 1) != nil {
			t.Fatalf("String accepted %q, which is not strict JSON", raw)
		}
		var want string
		if e := stdjson.Unmarshal(raw, &want); e != nil || want != s {
			t.Fatalf("String(%q) = %q; encoding/json: %q %v", raw, s, want, e)
		}
	})
}
