package protocol

import (
	"github.com/sigil-ws/sigil/internal/strictjson"
)

// decodeStrict decodes body into v under spec.md §6.3, refusing members v
// does not declare and case variants of those it does
// (internal/strictjson.Unmarshal).
func decodeStrict(body []byte, v any) error {
	return strictjson.Unmarshal(body, v, &strictjson.Options{MaxDepth: MaxDepth})
}
