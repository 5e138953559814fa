package server

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"

	"github.com/sigil-ws/sigil/internal/strictjson"
	"github.com/sigil-ws/sigil/protocol"
)

// ProofHeader carries the proof of possession of admin requests.
const ProofHeader = "Sigil-Proof"

// AdminBody is the body of the proof frame of an admin request: the
// session public key (its thumbprint must be the bearer token's cnf.jkt)
// and the request body as JSON ({} for GET).
type AdminBody = protocol.AdminProofBody

// AdminHandler serves the admin API under /v1/admin/:
//
//	GET  /v1/admin/sessions                  act admin.sessions
//	POST /v1/admin/revoke {"jti"} or {"sub"} act admin.revoke
//	POST /v1/admin/kick   {"sid"}            act admin.kick
//
// Every request carries "Authorization: Bearer <session token>" whose roles
// include "admin", and a Sigil-Proof header: a client frame signed by the
// token's session key, with the token's sid and sub, act "admin.<op>" and
// body {"jwk": <session public JWK>, "req": <the request body, {} for GET>},
// verified by the same pipeline as WebSocket frames (freshness, replay with
// its own seq store, and a policy that allows admin.* to role admin only).
func (s *Server) AdminHandler() http.Handler {
	return http.HandlerFunc(s.serveAdmin)
}

func (s *Server) serveAdmin(w http.ResponseWriter, r *http.Request) {
	op := strings.TrimPrefix(r.URL.Path, "/v1/admin/")
	want := map[string]string{"sessions": http.MethodGet, "revoke": http.MethodPost, "kick": http.MethodPost}[op]
	if want == "" {
		writeError(w, newAPIError(http.StatusNotFound, ErrCodeNotFound, "no such admin operation"))
		return
	}
	if r.Method != want {
		writeError(w, newAPIError(http.StatusMethodNotAllowed, ErrCodeInvalidRequest, want+" only"))
		return
	}
	body := []byte("{}")
	if want == http.MethodPost {
		data, err := io.ReadAll(io.LimitReader(r.Body, 16<<10+1))
		if err != nil || len(data) > 16<<10 || strictjson.Valid(data, 8) != nil {
			writeError(w, newAPIError(http.StatusBadRequest, ErrCodeInvalidRequest, "body is not strict JSON"))
			return
		}
		body = data
	}
	if aerr := s.adminAuth(r, "admin."+op, body); aerr != nil {
		writeError(w, aerr)
		return
	}
	ctx := r.Context()
	switch op {
	case "sessions":
		list, err := s.ClusterSessions(ctx)
		if err != nil {
			s.storeError("admin sessions", err)
			writeError(w, storeUnavailable("the session list could not be read"))
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"sessions": list})
	case "revoke":
		var req struct {
			JTI string `json:"jti"`
			Sub string `json:"sub"`
		}
		if protocol.DecodeBody(body, &req) != nil || (req.JTI == "") == (req.Sub == "") {
			writeError(w, newAPIError(http.StatusBadRequest, ErrCodeInvalidRequest, `body must be {"jti"} or {"sub"}`))
			return
		}
		var n int
		var err error
		if req.JTI != "" {
			n, err = s.RevokeToken(ctx, req.JTI)
		} else {
			n, err = s.RevokeSubject(ctx, req.Sub)
		}
		if err != nil {
			s.storeError("admin revoke", err)
			writeError(w, storeUnavailable("the revocation could not be stored"))
			return
		}
		if s.control != nil {
			// The other nodes close theirs on the revocation's notice; the
			// count is of every node's, or of this node's if the list
			// cannot be read.
			all, err := s.clusterCount(ctx, func(si SessionInfo) bool {
				return (req.JTI != "" && si.TokenID == req.JTI) || (req.Sub != "" && si.Subject == req.Sub)
			})
			if err != nil {
				s.storeError("admin revoke count", err)
			}
			n = max(n, all)
		}
		s.log.Info("admin revoke", "jti", req.JTI, "sub", req.Sub, "closed", n)
		writeJSON(w, http.StatusOK, map[string]int{"closed": n})
	case "kick":
		var req struct {
			SID string `json:"sid"`
		}
		if protocol.DecodeBody(body, &req) != nil || req.SID == "" {
			writeError(w, newAPIError(http.StatusBadRequest, ErrCodeInvalidRequest, `body must be {"sid"}`))
			return
		}
		n, err := s.Kick(ctx, req.SID)
		if err != nil {
			s.storeError("admin kick", err)
			writeError(w, storeUnavailable("the kick could not reach the other nodes"))
			return
		}
		if n == 0 {
			writeError(w, newAPIError(http.StatusNotFound, ErrCodeNotFound, "no live session with this sid"))
			return
		}
		s.log.Info("admin kick", "sid", req.SID, "closed", n)
		writeJSON(w, http.StatusOK, map[string]int{"closed": n})
	}
}

func (s *Server) adminAuth(r *http.Request, act string, body []byte) *apiError {
	unauth := newAPIError(http.StatusUnauthorized, ErrCodeUnauthorized, "a bearer session token and a Sigil-Proof are required")
	auth := r.Header.Get("Authorization")
	token, ok := strings.CutPrefix(auth, "Bearer ")
	proof := r.Header.Get(ProofHeader)
	if !ok || token == "" || proof == "" || len(proof) > s.cfg.MaxFrame {
		return unauth
	}
	_, m, err := s.keys().admin.VerifyTokenProof(r.Context(), token, []byte(proof))
	if err != nil {
		switch protocol.CodeOf(err) {
		case protocol.CodeForbidden:
			return newAPIError(http.StatusForbidden, ErrCodeForbidden, "the admin role is required")
		case protocol.CodeUnavailable, protocol.CodeInternal:
			s.storeError("admin", err)
			return storeFailed()
		}
		return unauth
	}
	if m.Action != act {
		return newAPIError(http.StatusUnauthorized, ErrCodeUnauthorized, "proof act must be "+act)
	}
	var ab AdminBody
	if protocol.DecodeBody(m.Body, &ab) != nil || !sameJSON(ab.Req, body) {
		return newAPIError(http.StatusUnauthorized, ErrCodeUnauthorized, "proof body.req must equal the request body")
	}
	return nil
}

func sameJSON(a, b []byte) bool {
	var ca, cb bytes.Buffer
	if json.Compact(&ca, a) != nil || json.Compact(&cb, b) != nil {
		return false
	}
	return bytes.Equal(ca.Bytes(), cb.Bytes())
}
