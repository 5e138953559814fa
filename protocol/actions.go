package protocol

// CheckAction checks that an accepted client frame of a built-in action
// carries exactly the fields its row of spec.md §9.1 lists, besides the
// claims every client frame has and cid:
//
//	ping                     nothing else: no ch, to, body or enc
//	sub                      ch; no to or enc; body absent or {since} (§20)
//	history                  ch; no to or enc; body absent or {limit?, before? | after?} (§20)
//	unsub, presence          ch; no to, body or enc
//	pub                      ch, and body or enc; no to
//	dm                       to, and body or enc; no ch
//	refresh                  no ch or to (its body is checked by the refresh, §12.2)
//	hello                    never after the handshake
//
// Anything else is bad_request (§9.5), answered after acceptance: it does
// not count toward the rejection threshold. Application actions (names
// with a dot) take any ch, body or enc and are not checked here, nor are
// unknown names (unknown_action). Errors are *Error with CodeBadRequest
// and Ref set to the frame's id.
func CheckAction(env *Envelope) error {
	if msg := actionMisfit(env); msg != "" {
		return &Error{Code: CodeBadRequest, Message: msg, Ref: env.ID}
	}
	return nil
}

func actionMisfit(env *Envelope) string {
	ch, to, payload := env.Channel != "", env.To != "", len(env.Body) > 0 || env.Enc != ""
	switch env.Action {
	case ActHello:
		return "hello is only allowed as the first frame"
	case ActPing:
		if ch || to || payload {
			return "ping carries no ch, to, body or enc"
		}
	case ActSub, ActHistory:
		inbox := env.Action == ActHistory && to && !ch // the inbox's history (spec.md §20.11)
		if !ch && !inbox {
			return env.Action + " needs ch"
		}
		if (to && !inbox) || env.Enc != "" {
			return env.Action + " carries no to or enc"
		}
		var err error
		if env.Action == ActSub {
			_, err = ParseSubBody(env.Body)
		} else {
			_, err = ParseHistoryRequest(env.Body)
		}
		if err != nil {
			return err.(*Error).Message
		}
	case ActUnsub, ActPresence:
		if !ch {
			return env.Action + " needs ch"
		}
		if to || payload {
			return env.Action + " carries no to, body or enc"
		}
	case ActPub:
		if !ch || !payload {
			return "pub needs ch and body or enc"
		}
		if to {
			return "pub carries no to"
		}
	case ActDM:
		if !to || !payload {
			return "dm needs to and body or enc"
		}
		if ch {
			return "dm carries no ch"
		}
	case ActRefresh:
		if ch || to {
			return "refresh carries no ch or to"
		}
	}
	return ""
}
