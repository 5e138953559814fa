package server

import (
	"context"

	"github.com/sigil-ws/sigil/protocol"
)

// Grant types of /v1/token (spec.md §13.1).
const (
	GrantPassword = protocol.GrantPassword // username and password, checked by a users file
	GrantExternal = protocol.GrantExternal // a JWT assertion from a trusted identity provider
	GrantLogin    = protocol.GrantLogin    // a login token and a proof signed by its login key (login.go)
)

// Credentials are what a client presented to /v1/token.
type Credentials struct {
	GrantType string
	Username  string // password grant
	Password  string // password grant
	Assertion string // external grant: the identity provider's JWT
}

// Identity is an authenticated subject and its roles.
type Identity struct {
	Subject string
	Roles   []string
}

// Authenticator turns credentials into an identity. It returns
// ErrInvalidCredentials for any bad credential (the HTTP API answers all of
// them with the same invalid_grant) and ErrUnsupportedGrant for a grant
// type it does not handle. Implementations must be safe for concurrent use.
type Authenticator interface {
	Authenticate(ctx context.Context, c Credentials) (*Identity, error)
}

// Authenticators routes each grant type to its authenticator; a nil member
// means the grant is not supported.
type Authenticators struct {
	Password Authenticator // grant_type "password", e.g. a *UsersFile
	External Authenticator // grant_type "external", e.g. an *ExternalIssuer
}

// Authenticate implements Authenticator.
func (a Authenticators) Authenticate(ctx context.Context, c Credentials) (*Identity, error) {
	var next Authenticator
	switch c.GrantType {
	case GrantPassword:
		next = a.Password
	case GrantExternal:
		next = a.External
	}
	if next == nil {
		return nil, ErrUnsupportedGrant
	}
	return next.Authenticate(ctx, c)
}
