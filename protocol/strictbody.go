package protocol

import (
	"reflect"
	"strings"

	"github.com/go-jose/go-jose/v4/json"
	"github.com/sigil-ws/sigil/internal/strictjson"
)

// strictUnknown decodes body into v (a pointer to a struct) with go-jose's
// strict decoder, and first rejects top-level members that v's type does not
// declare.
func strictUnknown(body []byte, v any) error {
	if err := strictjson.Valid(body, MaxDepth); err != nil {
		return err
	}
	t := reflect.TypeOf(v)
	if t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Struct {
		obj, err := decodeObject(body)
		if err != nil {
			return err
		}
		known := fieldNames(t.Elem())
		for k := range obj {
			if !known[k] {
				return errString("unknown body member " + quote(k))
			}
		}
	}
	return json.Unmarshal(body, v)
}

func fieldNames(t reflect.Type) map[string]bool {
	out := map[string]bool{}
	for i := 0; i < t.NumField(); i++ {
		tag := t.Field(i).Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if name == "" {
			name = t.Field(i).Name
		}
		if name != "-" {
			out[name] = true
		}
	}
	return out
}
