// Package chat holds the browser chat demo that `sigil serve --demo`
// serves at /. This is a placeholder page; the real app replaces static/.
package chat

import "embed"

// Static is the chat app's files, rooted at "static".
//
//go:embed static
var Static embed.FS
