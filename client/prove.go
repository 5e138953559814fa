package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/sigil-ws/sigil/audit"
	"github.com/sigil-ws/sigil/protocol"
	"golang.org/x/mod/sumdb/note"
)

// ErrNotLogged: the server answered without a log index: it keeps no
// audit log, or keeps it asynchronously (spec.md §21.3).
var ErrNotLogged = errors.New("sigil client: the reply carries no audit log index")

// PublishLogged is Publish on a server with a synchronous audit log: it
// returns the index of the message's entry in the log (spec.md §21.3),
// which Prove proves. The message was published even when the error is
// ErrNotLogged.
func (c *Client) PublishLogged(ctx context.Context, channel string, body any) (uint64, error) {
	if !protocol.ValidChannel(channel) {
		return 0, fmt.Errorf("sigil client: invalid channel name %q", channel)
	}
	plain, err := marshalBody(body, true)
	if err != nil {
		return 0, err
	}
	m, err := c.request(ctx, protocol.ActPub, channel, "", plain, true)
	if err != nil {
		return 0, err
	}
	return logIndex(m)
}

// SendLogged is Send (a direct message) returning the log index, as
// PublishLogged.
func (c *Client) SendLogged(ctx context.Context, user string, body any) (uint64, error) {
	if user == "" || len(user) > 256 {
		return 0, errors.New("sigil client: invalid user name")
	}
	plain, err := marshalBody(body, true)
	if err != nil {
		return 0, err
	}
	m, err := c.request(ctx, protocol.ActDM, "", user, plain, true)
	if err != nil {
		return 0, err
	}
	return logIndex(m)
}

// LogIndex returns the index of m's entry in the server's audit log, and
// whether the delivery carries one: a server with a synchronous audit log
// writes the entry before it delivers the message, and says where in the
// server-signed delivery (spec.md §21.3). Prove proves it.
func (m *Message) LogIndex() (uint64, bool) {
	if m.logIndex == nil {
		return 0, false
	}
	return *m.logIndex, true
}

// deliveryLogIndex is the log_index of a delivery d that verified (its
// body decoded strictly then).
func deliveryLogIndex(d *protocol.Message) *uint64 {
	var db protocol.DeliverBody
	if protocol.DecodeBody(d.Body, &db) != nil {
		return nil
	}
	return db.LogIndex
}

func logIndex(m *protocol.Message) (uint64, error) {
	var b struct {
		LogIndex *uint64 `json:"log_index"`
	}
	if err := json.Unmarshal(m.Body, &b); err != nil || b.LogIndex == nil {
		return 0, ErrNotLogged
	}
	return *b.LogIndex, nil
}

// Prove asks the server for the inclusion proof of audit log entry index
// (GET /v1/audit/proof, spec.md §21.4) and checks it against the
// checkpoint key v, which the caller pins (it is the server's log.vkey,
// obtained out of band). It waits, until ctx is done, for a checkpoint
// that covers the entry (one comes every checkpoint interval). The server
// serves proofs to anyone only with AuditConfig.Public (sigil serve
// --audit-public); otherwise they are an admin's (401). It returns
// the checked proof and its entry; the caller compares the entry's frame
// with the message it holds (Entry.Frame is the frame byte for byte).
func (c *Client) Prove(ctx context.Context, index uint64, v note.Verifier) (*audit.Proof, *audit.Entry, error) {
	u := c.base + "/v1/audit/proof?index=" + strconv.FormatUint(index, 10)
	wait := 100 * time.Millisecond
	for {
		data, status, err := getBody(ctx, c.opts.HTTPClient, u)
		if err != nil {
			return nil, nil, err
		}
		switch status {
		case http.StatusOK:
			p, err := audit.ParseProof(data)
			if err != nil {
				return nil, nil, err
			}
			if p.Index != index {
				return nil, nil, fmt.Errorf("sigil client: the server proved entry %d, not %d", p.Index, index)
			}
			e, _, err := p.Check(v)
			if err != nil {
				return nil, nil, fmt.Errorf("sigil client: the audit proof does not verify: %w", err)
			}
			return p, e, nil
		case http.StatusNotFound:
			// Not in a published checkpoint yet (or no audit log).
			select {
			case <-ctx.Done():
				return nil, nil, fmt.Errorf("sigil client: entry %d not proved: %w", index, ctx.Err())
			case <-time.After(wait):
			}
			wait = min(2*wait, 2*time.Second)
		default:
			return nil, nil, fmt.Errorf("sigil client: GET %s: HTTP %d", u, status)
		}
	}
}

func getBody(ctx context.Context, hc *http.Client, u string) ([]byte, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return data, resp.StatusCode, err
}
