package protocol

import (
	"fmt"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4/json"
)

// Rule grants an action, optionally narrowed to a channel pattern, to the
// holders of any of Roles. An empty Roles list grants it to every
// authenticated session.
type Rule struct {
	Action  string   `json:"action"`            // an action name, or "*" for any
	Channel string   `json:"channel,omitempty"` // a channel pattern; empty matches any frame
	Roles   []string `json:"roles"`             // any one of these roles suffices
}

// Policy decides which roles may perform which actions. A frame is allowed
// if any rule that matches its action and channel grants one of the
// session's roles; otherwise it is forbidden (default deny). Rule order does
// not matter.
//
// Channel patterns are dot-separated: "*" matches exactly one segment and
// ">" as the last segment matches one or more segments. "rooms.*" matches
// "rooms.lobby" but not "rooms" or "rooms.a.b"; "rooms.>" matches both of
// the latter's longer forms.
type Policy struct {
	rules   []compiledRule
	history []compiledHistory
}

type compiledHistory struct {
	HistoryRule
	segs []string
}

type compiledRule struct {
	Rule
	segs []string
}

// NewPolicy compiles rules.
func NewPolicy(rules []Rule) (*Policy, error) {
	p := &Policy{}
	for i, r := range rules {
		if r.Action != "*" && !validAction(r.Action) {
			return nil, fmt.Errorf("policy rule %d: invalid action %q", i, r.Action)
		}
		segs, ok := compilePattern(r.Channel)
		if !ok {
			return nil, fmt.Errorf("policy rule %d: invalid channel pattern %q", i, r.Channel)
		}
		if r.Roles == nil {
			return nil, fmt.Errorf("policy rule %d: roles is required (use [] for any session)", i)
		}
		p.rules = append(p.rules, compiledRule{Rule: r, segs: segs})
	}
	return p, nil
}

// WithHistory returns a copy of p whose channels matching the rules'
// patterns keep a history (spec.md §20.2). The first matching rule
// applies.
func (p *Policy) WithHistory(rules []HistoryRule) (*Policy, error) {
	out := &Policy{}
	if p != nil {
		out.rules = p.rules
	}
	for i, r := range rules {
		segs, ok := compilePattern(r.Channel)
		if r.Channel == InboxPattern {
			segs, ok = nil, true // the inbox streams (spec.md §20.11)
		}
		if !ok || r.Channel == "" {
			return nil, fmt.Errorf("history rule %d: invalid channel pattern %q", i, r.Channel)
		}
		if r.Size < 0 || r.Size > MaxHistorySize || r.TTL < 0 {
			return nil, fmt.Errorf("history rule %d: size must be 0-%d and ttl not negative", i, MaxHistorySize)
		}
		out.history = append(out.history, compiledHistory{HistoryRule: r, segs: segs})
	}
	return out, nil
}

// History returns the history limits of channel ch: those of the first
// history rule whose pattern matches it, or none (Size 0).
func (p *Policy) History(ch string) HistoryLimits {
	inbox := strings.HasPrefix(ch, InboxPattern)
	if p != nil {
		for i := range p.history {
			if h := &p.history[i]; (h.Channel == InboxPattern) == inbox && (inbox || matchChannel(h.segs, ch)) {
				return HistoryLimits{Size: h.Size, TTL: time.Duration(h.TTL) * time.Second}
			}
		}
	}
	return HistoryLimits{}
}

// HistoryRules returns a copy of the policy's history rules.
func (p *Policy) HistoryRules() []HistoryRule {
	out := make([]HistoryRule, len(p.history))
	for i, h := range p.history {
		out[i] = h.HistoryRule
	}
	return out
}

// ParsePolicy decodes a policy document strictly: {"rules":[{...},...]},
// with an optional "history":[{"channel","size","ttl"},...] (spec.md
// §20.2).
func ParsePolicy(data []byte) (*Policy, error) {
	obj, err := decodeObject(data)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	_, hasHistory := obj["history"]
	if _, ok := obj["rules"]; !ok || len(obj) != 1 && !(hasHistory && len(obj) == 2) {
		return nil, errString(`policy: must be an object with exactly a "rules" member and optionally "history"`)
	}
	var history []HistoryRule
	if hasHistory {
		var raw []json.RawMessage
		if err := json.Unmarshal(obj["history"], &raw); err != nil {
			return nil, fmt.Errorf("policy history: %w", err)
		}
		for i, r := range raw {
			var h HistoryRule
			if err := DecodeBody(r, &h); err != nil || h.Channel == "" {
				return nil, fmt.Errorf("policy history rule %d: must be {channel, size, ttl}: %v", i, err)
			}
			history = append(history, h)
		}
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(obj["rules"], &raw); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	rules := make([]Rule, 0, len(raw))
	for i, r := range raw {
		ro, err := decodeObject(r)
		if err != nil {
			return nil, fmt.Errorf("policy rule %d: %w", i, err)
		}
		for k := range ro {
			if k != "action" && k != "channel" && k != "roles" {
				return nil, fmt.Errorf("policy rule %d: unknown member %q", i, k)
			}
		}
		var rule Rule
		if err := json.Unmarshal(r, &rule); err != nil {
			return nil, fmt.Errorf("policy rule %d: %w", i, err)
		}
		rules = append(rules, rule)
	}
	p, err := NewPolicy(rules)
	if err != nil || history == nil {
		return p, err
	}
	return p.WithHistory(history)
}

// Rules returns a copy of the policy's rules.
func (p *Policy) Rules() []Rule {
	out := make([]Rule, len(p.rules))
	for i, r := range p.rules {
		out[i] = r.Rule
	}
	return out
}

// Allow returns nil if roles may perform action on channel (channel may be
// empty), and an *Error with CodeForbidden otherwise.
func (p *Policy) Allow(action, channel string, roles []string) error {
	if p != nil {
		for i := range p.rules {
			r := &p.rules[i]
			if grantMatches(r.Action, r.segs, action, channel) && (len(r.Roles) == 0 || hasAnyRole(roles, r.Roles)) {
				return nil
			}
		}
	}
	if channel != "" {
		return newErr(CodeForbidden, "action %q on channel %q is not allowed for this session", action, channel)
	}
	return newErr(CodeForbidden, "action %q is not allowed for this session", action)
}

// Grant is one right of a session (spec.md §8.3): an action, or "*" for
// any, optionally narrowed to a channel pattern. It is a policy rule
// without its roles, and it matches a frame as that rule does.
type Grant struct {
	Action  string `json:"action"`
	Channel string `json:"channel,omitempty"`
}

// Grants is what a session may do, as welcome announces it. Under the
// policy that produced it, a frame is allowed exactly when a grant matches
// it. It is advisory for a client (the server still decides every frame):
// a user interface uses it to show what would be refused.
type Grants []Grant

// Grants returns the rights of a session with roles: the action and
// channel pattern of every rule that lists one of roles or none, in rule
// order, each once. The result is never nil ([] for a session that may do
// nothing).
func (p *Policy) Grants(roles []string) Grants {
	out := Grants{}
	if p == nil {
		return out
	}
	seen := make(map[Grant]bool)
	for i := range p.rules {
		r := &p.rules[i]
		g := Grant{Action: r.Action, Channel: r.Channel}
		if seen[g] || (len(r.Roles) != 0 && !hasAnyRole(roles, r.Roles)) {
			continue
		}
		seen[g] = true
		out = append(out, g)
	}
	return out
}

// Allows reports whether a grant matches action on channel (channel may
// be empty), as Policy.Allow would for the roles the grants were made
// for. A grant with an invalid action or channel pattern matches nothing.
func (gs Grants) Allows(action, channel string) bool {
	for _, g := range gs {
		if g.Action != "*" && !validAction(g.Action) {
			continue
		}
		segs, ok := compilePattern(g.Channel)
		if ok && grantMatches(g.Action, segs, action, channel) {
			return true
		}
	}
	return false
}

// grantMatches is the matching rule of spec.md §9.3: the rule's action is
// "*" or act, and, when it has a channel pattern (segs), the frame has a
// ch that matches it.
func grantMatches(ruleAction string, segs []string, act, ch string) bool {
	if ruleAction != "*" && ruleAction != act {
		return false
	}
	return segs == nil || (ch != "" && matchChannel(segs, ch))
}

// compilePattern splits a channel pattern into its segments; "" (no
// pattern) gives nil. ok is false for an invalid pattern: an empty
// segment, ">" before the last segment, or a segment that is not a valid
// channel name.
func compilePattern(pattern string) (segs []string, ok bool) {
	if pattern == "" {
		return nil, true
	}
	segs = strings.Split(pattern, ".")
	for j, s := range segs {
		if s == "" || (s == ">" && j != len(segs)-1) {
			return nil, false
		}
		if s != "*" && s != ">" && !ValidChannel(s) {
			return nil, false
		}
	}
	return segs, true
}

func hasAnyRole(have, want []string) bool {
	for _, w := range want {
		for _, h := range have {
			if h == w {
				return true
			}
		}
	}
	return false
}

func matchChannel(pattern []string, channel string) bool {
	for i, p := range pattern {
		if p == ">" {
			return channel != ""
		}
		if channel == "" {
			return false
		}
		seg, rest, found := strings.Cut(channel, ".")
		if p != "*" && p != seg {
			return false
		}
		if !found {
			return i == len(pattern)-1
		}
		channel = rest
	}
	return false
}

// DefaultPolicy is the policy of the chat demo and a sensible start:
// every session may ping, refresh, list presence, send direct messages and
// subscribe/publish in "rooms.>"; everyone may read "announce.>" but only
// role "announcer" may publish there; role "admin" may do anything. Users
// may read the history of both; "rooms.>" keeps the last 100
// publications of each room for a day (spec.md §20.2), and each user's
// inbox its last 100 direct messages for a week (§20.11).
func DefaultPolicy() *Policy {
	p, err := NewPolicy([]Rule{
		{Action: "*", Roles: []string{"admin"}},
		{Action: ActPing, Roles: []string{}},
		{Action: ActRefresh, Roles: []string{}},
		{Action: ActDM, Roles: []string{"user"}},
		{Action: ActSub, Channel: "rooms.>", Roles: []string{"user"}},
		{Action: ActUnsub, Channel: ">", Roles: []string{}},
		{Action: ActPub, Channel: "rooms.>", Roles: []string{"user"}},
		{Action: ActPresence, Channel: "rooms.>", Roles: []string{"user"}},
		{Action: ActSub, Channel: "announce.>", Roles: []string{"user"}},
		{Action: ActPub, Channel: "announce.>", Roles: []string{"announcer"}},
		{Action: ActPresence, Channel: "announce.>", Roles: []string{"user"}},
		{Action: ActHistory, Channel: "rooms.>", Roles: []string{"user"}},
		{Action: ActHistory, Channel: "announce.>", Roles: []string{"user"}},
	})
	if err == nil {
		p, err = p.WithHistory([]HistoryRule{{Channel: "rooms.>", Size: 100, TTL: 86400}, {Channel: InboxPattern, Size: 100, TTL: 7 * 86400}})
	}
	if err != nil {
		panic(err)
	}
	return p
}
