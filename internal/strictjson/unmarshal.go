package strictjson

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"sync"
)

// DefaultMaxDepth is the nesting limit Unmarshal uses when Options give
// none: the one of spec.md §6.3.
const DefaultMaxDepth = 32

// Options tune Unmarshal. The zero value (and nil) is the strictest.
type Options struct {
	// MaxDepth bounds the nesting of arrays and objects; 0 means
	// DefaultMaxDepth.
	MaxDepth int
	// AllowUnknown skips members that the target struct does not declare,
	// for reading a few members of a larger object. By default an unknown
	// member is an error. Duplicate and case-variant member names are
	// errors either way.
	AllowUnknown bool
}

// Unmarshal decodes the strict JSON text data into v, a non-nil pointer,
// as encoding/json would, after checking what encoding/json does not:
//
//   - data is strict JSON (Valid): valid UTF-8, no duplicate member names
//     after unescaping, bounded depth, numbers in range;
//   - every object decoded into a struct has only member names that are,
//     byte for byte, the json names of its fields (encoding/json matches
//     names case-insensitively, so "Act" would fill the field "act");
//     nested structs, slices, arrays and maps of structs included;
//   - a struct or map target is given an object, not null.
//
// Fields whose type implements json.Unmarshaler (json.RawMessage among
// them) and interface fields receive their value unchecked beyond Valid.
func Unmarshal(data []byte, v any, opts *Options) error {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.MaxDepth <= 0 {
		o.MaxDepth = DefaultMaxDepth
	}
	if err := Valid(data, o.MaxDepth); err != nil {
		return err
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return errorString("json: Unmarshal needs a non-nil pointer")
	}
	t := rv.Type().Elem()
	if k := t.Kind(); k == reflect.Struct || k == reflect.Map {
		if bytes.TrimSpace(data)[0] != '{' {
			return ErrNotObject
		}
	}
	if err := checkNames(data, t, o, o.MaxDepth); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if !o.AllowUnknown {
		dec.DisallowUnknownFields()
	}
	return dec.Decode(v)
}

type errorString string

func (e errorString) Error() string { return string(e) }

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// checkNames walks data (already Valid) along the type t and checks the
// member names of every object that fills a struct.
func checkNames(data []byte, t reflect.Type, o Options, depth int) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) || t.Implements(unmarshalerType) {
		return nil
	}
	d := bytes.TrimSpace(data)
	if len(d) == 0 || d[0] == 'n' { // null
		return nil
	}
	switch t.Kind() {
	case reflect.Struct:
		if d[0] != '{' {
			return nil // encoding/json reports the type mismatch
		}
		fields := fieldsOf(t)
		return Members(d, depth, func(name, value []byte) error {
			ft, ok := fields.exact[string(name)]
			if !ok {
				for n := range fields.exact {
					if strings.EqualFold(n, string(name)) {
						return errorString("json: member " + strconv.Quote(string(name)) + " is a case variant of " + strconv.Quote(n))
					}
				}
				if !o.AllowUnknown {
					return errorString("json: unknown member " + strconv.Quote(string(name)))
				}
				return nil
			}
			return checkNames(value, ft, o, depth)
		})
	case reflect.Map:
		if d[0] != '{' || !needsCheck(t.Elem()) {
			return nil
		}
		return Members(d, depth, func(_, value []byte) error { return checkNames(value, t.Elem(), o, depth) })
	case reflect.Slice, reflect.Array:
		if d[0] != '[' || !needsCheck(t.Elem()) {
			return nil
		}
		var elems []json.RawMessage
		if err := json.Unmarshal(d, &elems); err != nil {
			return nil // encoding/json reports it
		}
		for _, e := range elems {
			if err := checkNames(e, t.Elem(), o, depth); err != nil {
				return err
			}
		}
	}
	return nil
}

// needsCheck reports whether values of t can hold a struct to check.
func needsCheck(t reflect.Type) bool {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct, reflect.Map, reflect.Slice, reflect.Array:
		return true
	}
	return false
}

type structFields struct {
	exact map[string]reflect.Type // json name -> field type
}

var fieldCache sync.Map // reflect.Type -> *structFields

// fieldsOf returns the json names of t's fields as encoding/json sees
// them: the tag name, or the Go name without a tag; "-" and unexported
// fields skipped; untagged embedded structs flattened.
func fieldsOf(t reflect.Type) *structFields {
	if f, ok := fieldCache.Load(t); ok {
		return f.(*structFields)
	}
	f := &structFields{exact: map[string]reflect.Type{}}
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for i := 0; i < t.NumField(); i++ {
			sf := t.Field(i)
			tag := sf.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, _, _ := strings.Cut(tag, ",")
			if sf.Anonymous && name == "" {
				et := sf.Type
				if et.Kind() == reflect.Pointer {
					et = et.Elem()
				}
				if et.Kind() == reflect.Struct {
					walk(et)
					continue
				}
			}
			if !sf.IsExported() {
				continue
			}
			if name == "" {
				name = sf.Name
			}
			f.exact[name] = sf.Type
		}
	}
	walk(t)
	fieldCache.Store(t, f)
	return f
}
