module github.com/sigil-ws/sigil

go 1.26.8

require (
	github.com/go-jose/go-jose/v4 v4.1.8
	github.com/google/uuid v1.6.0
)
