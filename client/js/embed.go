// Package sigiljs embeds the browser client so that the server can serve
// it at /js/.
package sigiljs

import "embed"

// FS holds the client's JavaScript files.
//
//go:embed *.js
var FS embed.FS
