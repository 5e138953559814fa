package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sigil-ws/sigil/audit"
	"github.com/sigil-ws/sigil/protocol"
	"golang.org/x/mod/sumdb/note"
)

// runAudit is "sigil audit": the offline tools of the audit log
// (spec.md §21). None of them needs the server: a directory, a URL of the
// static log, or an export bundle is enough.
func runAudit(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stdout, auditUsage)
		return &usageError{msg: "audit: a subcommand is required"}
	}
	switch args[0] {
	case "verify":
		return auditVerify(ctx, args[1:], stdout)
	case "prove":
		return auditProve(ctx, args[1:], stdout)
	case "check-proof":
		return auditCheckProof(args[1:], stdin, stdout)
	case "export":
		return auditExport(ctx, args[1:], stdout)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, auditUsage)
		return nil
	}
	fmt.Fprint(stdout, auditUsage)
	return &usageError{msg: fmt.Sprintf("audit: unknown subcommand %q", args[0])}
}

const auditUsage = `usage:
  sigil audit verify [--vkey FILE,...] [--jwks FILE|URL] [--state FILE] [--json] LOG...
  sigil audit prove [--vkey FILE] (--index N | --id MESSAGE-ID) LOG
  sigil audit check-proof --vkey FILE [PROOF-FILE]
  sigil audit export [--vkey FILE] --from N --to M [--out FILE] LOG
LOG is a log directory (--audit-dir), a server URL (https://host, its /v1/audit/
is read), or for verify an export bundle file. --vkey pins the checkpoint key
(the <audit-dir>.key file, or its second line alone); without it the key the
log itself holds (log.vkey) is used, and verify says so.
`

// auditSource opens LOG: a directory or a server URL.
func auditSource(arg string) (audit.Source, string, error) {
	if strings.HasPrefix(arg, "https://") || strings.HasPrefix(arg, "http://") {
		_, base, err := clientEndpoints(strings.TrimSuffix(strings.TrimSuffix(arg, "/"), "/v1/audit"), false)
		if err != nil {
			return nil, "", err
		}
		src, err := audit.URLSource(base+"/v1/audit/", cliHTTPClient())
		return src, base + "/v1/audit/", err
	}
	st, err := os.Stat(arg)
	if err != nil {
		return nil, "", err
	}
	if !st.IsDir() {
		return nil, "", fmt.Errorf("%s is not a log directory", arg)
	}
	return audit.DirSource(arg), arg, nil
}

// readVKey reads a checkpoint verifier key: a file holding it (alone, or
// as the second line of a key file) or the key text itself.
func readVKey(arg string) (note.Verifier, string, error) {
	text := arg
	if data, err := os.ReadFile(arg); err == nil {
		lines := strings.Fields(string(data))
		switch len(lines) {
		case 1:
			text = lines[0]
		case 2:
			text = lines[1] // a key file: signer key, verifier key
		default:
			return nil, "", fmt.Errorf("%s: not a verifier key file", arg)
		}
	} else if !strings.Contains(arg, "+") {
		return nil, "", err
	}
	v, err := note.NewVerifier(text)
	if err != nil {
		return nil, "", fmt.Errorf("verifier key: %w", err)
	}
	return v, text, nil
}

// logVKey reads the verifier key that a log holds itself (log.vkey).
func logVKey(ctx context.Context, loc string) (note.Verifier, string, error) {
	if strings.HasPrefix(loc, "http") {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, loc+audit.VKeyFile, nil)
		if err != nil {
			return nil, "", err
		}
		resp, err := cliHTTPClient().Do(req)
		if err != nil {
			return nil, "", err
		}
		defer resp.Body.Close()
		data, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if err != nil || resp.StatusCode != http.StatusOK {
			return nil, "", fmt.Errorf("GET %s%s: %s", loc, audit.VKeyFile, resp.Status)
		}
		v, err := note.NewVerifier(strings.TrimSpace(string(data)))
		return v, strings.TrimSpace(string(data)), err
	}
	return readVKey(filepath.Join(loc, audit.VKeyFile))
}

// openAuditLog opens the log arg names (auditSource) and picks the key
// its checkpoints are checked with: the --vkey list if given, else the
// log's own (pickVKey). It returns the key's text too.
func openAuditLog(ctx context.Context, arg, vkey string) (audit.Source, note.Verifier, string, error) {
	src, loc, err := auditSource(arg)
	if err != nil {
		return nil, nil, "", err
	}
	pinned, texts, err := parseVKeys(vkey)
	if err != nil {
		return nil, nil, "", err
	}
	v, text, err := pickVKey(ctx, pinned, texts, loc, io.Discard)
	if err != nil {
		return nil, nil, "", err
	}
	return src, v, text, nil
}

// pickVKey chooses the pinned key of the log named origin (or the only
// one pinned), else the log's own key, noting it on w.
func pickVKey(ctx context.Context, pinned []note.Verifier, texts []string, loc string, w io.Writer) (note.Verifier, string, error) {
	own, ownText, ownErr := logVKey(ctx, loc)
	if len(pinned) == 0 {
		if ownErr != nil {
			return nil, "", fmt.Errorf("no --vkey, and the log holds none: %w", ownErr)
		}
		fmt.Fprintf(w, "note: %s: the checkpoint key is the log's own (%s): pin it with --vkey\n", loc, audit.VKeyFile)
		return own, ownText, nil
	}
	if len(pinned) == 1 {
		return pinned[0], texts[0], nil
	}
	if ownErr == nil {
		for i, v := range pinned {
			if v.Name() == own.Name() {
				return v, texts[i], nil
			}
		}
	}
	return nil, "", fmt.Errorf("%s: none of the --vkey keys names this log", loc)
}

func parseVKeys(list string) ([]note.Verifier, []string, error) {
	var vs []note.Verifier
	var texts []string
	for _, a := range splitList(list) {
		v, t, err := readVKey(a)
		if err != nil {
			return nil, nil, err
		}
		vs, texts = append(vs, v), append(texts, t)
	}
	return vs, texts, nil
}

// auditVerify is "sigil audit verify": each LOG in full, then the merged
// view of several (the logs of a cluster's nodes).
func auditVerify(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("audit verify", flag.ContinueOnError)
	fs.SetOutput(stdout)
	vkeys := fs.String("vkey", "", "the trusted checkpoint keys, comma-separated (files or key texts), one per log")
	jwksArg := fs.String("jwks", "", "pin the server's JWKS (a file or URL); default: the keys entries of the log")
	stateFile := fs.String("state", "", "a file of the checkpoints verified before, by origin: each log must extend its own (detects a rollback); updated when a log verifies")
	asJSON := fs.Bool("json", false, "print the reports as JSON, one per line")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return badUsage(fs, "audit verify: a LOG is required")
	}
	pinned, texts, err := parseVKeys(*vkeys)
	if err != nil {
		return err
	}
	var jwks *protocol.KeySet
	if *jwksArg != "" {
		if jwks, err = loadJWKS(ctx, *jwksArg); err != nil {
			return err
		}
	}
	state := map[string]string{}
	if *stateFile != "" {
		if data, err := os.ReadFile(*stateFile); err == nil {
			if err := json.Unmarshal(data, &state); err != nil {
				return fmt.Errorf("--state %s: %w", *stateFile, err)
			}
		} else if !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	failed := 0
	var total uint64
	senders := map[string]struct{}{}
	var first, last int64
	for _, arg := range fs.Args() {
		start := time.Now()
		rep, err := verifyOne(ctx, arg, pinned, texts, jwks, state, stdout)
		if err != nil {
			return fmt.Errorf("%s: %w", arg, err)
		}
		if *asJSON {
			if err := json.NewEncoder(stdout).Encode(rep); err != nil {
				return err
			}
		} else {
			printReport(stdout, arg, rep, time.Since(start))
		}
		if !rep.OK() {
			failed++
		} else if *stateFile != "" && rep.Checkpoint != nil {
			state[rep.Origin] = string(rep.Checkpoint)
		}
		total += rep.Size
		for _, s := range rep.Subjects {
			senders[s] = struct{}{}
		}
		if rep.First != 0 && (first == 0 || rep.First < first) {
			first = rep.First
		}
		last = max(last, rep.Last)
	}
	if fs.NArg() > 1 && !*asJSON {
		fmt.Fprintf(stdout, "merged: %d logs, %d entries, %d senders, %s\n", fs.NArg(), total, len(senders), timeRange(first, last))
	}
	if *stateFile != "" {
		data, _ := json.MarshalIndent(state, "", "  ")
		if err := os.WriteFile(*stateFile, append(data, '\n'), 0o644); err != nil {
			return err
		}
	}
	if failed > 0 {
		return fmt.Errorf("audit verify: %d of %d logs have problems", failed, fs.NArg())
	}
	return nil
}

func verifyOne(ctx context.Context, arg string, pinned []note.Verifier, texts []string, jwks *protocol.KeySet, state map[string]string, w io.Writer) (*audit.Report, error) {
	if st, err := os.Stat(arg); err == nil && !st.IsDir() {
		// An export bundle.
		f, err := os.Open(arg)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		br := bufio.NewReader(f)
		head, _ := br.Peek(64)
		if !audit.IsBundle(head) {
			return nil, errors.New("neither a log directory nor an export bundle")
		}
		if len(pinned) != 1 {
			return nil, errors.New("an export bundle needs --vkey, the one key it is checked against")
		}
		return audit.VerifyBundle(ctx, br, audit.VerifyOptions{Verifier: pinned[0], JWKS: jwks})
	}
	src, loc, err := auditSource(arg)
	if err != nil {
		return nil, err
	}
	v, _, err := pickVKey(ctx, pinned, texts, loc, w)
	if err != nil {
		return nil, err
	}
	opts := audit.VerifyOptions{Verifier: v, JWKS: jwks}
	if prev, ok := state[v.Name()]; ok {
		opts.Previous = []byte(prev)
	}
	return audit.Verify(ctx, src, opts)
}

func printReport(w io.Writer, arg string, r *audit.Report, took time.Duration) {
	fmt.Fprintf(w, "log %s (%s): %d entries, root %x\n", r.Origin, arg, r.Size, r.Root)
	kinds := slices.Sorted(maps.Keys(r.Kinds))
	var parts []string
	for _, k := range kinds {
		parts = append(parts, fmt.Sprintf("%s %d", k, r.Kinds[k]))
	}
	fmt.Fprintf(w, "  kinds: %s\n  senders: %d\n  time: %s\n  verified in %s\n", strings.Join(parts, ", "), len(r.Subjects), timeRange(r.First, r.Last), took.Round(time.Millisecond))
	for _, p := range r.Problems {
		fmt.Fprintf(w, "  PROBLEM %s\n", p)
	}
	if r.Omitted > 0 {
		fmt.Fprintf(w, "  ... and %d more problems\n", r.Omitted)
	}
	if r.OK() {
		fmt.Fprintln(w, "  OK")
	}
}

func timeRange(first, last int64) string {
	if first == 0 {
		return "no entries"
	}
	f := func(ms int64) string { return time.UnixMilli(ms).UTC().Format(time.RFC3339Nano) }
	return f(first) + " .. " + f(last)
}

// auditProve is "sigil audit prove": the inclusion proof of one entry,
// by index or by the id of the message it holds.
func auditProve(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("audit prove", flag.ContinueOnError)
	fs.SetOutput(stdout)
	vkey := fs.String("vkey", "", "the trusted checkpoint key (file or key text); default the log's own")
	index := fs.Int64("index", -1, "the entry's index (a reply's log_index)")
	id := fs.String("id", "", "the id of the message the entry holds (scans the log, verifying it)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 || (*index < 0) == (*id == "") {
		return badUsage(fs, "audit prove: one LOG, and --index or --id")
	}
	src, v, _, err := openAuditLog(ctx, fs.Arg(0), *vkey)
	if err != nil {
		return err
	}
	var p *audit.Proof
	if *id != "" {
		found := int64(-1)
		rep, err := audit.Verify(ctx, src, audit.VerifyOptions{Verifier: v, Visit: func(i uint64, _ []byte, _ *audit.Entry, ev *protocol.Evidence) {
			if ev != nil && ev.Message.ID == *id && found < 0 {
				found = int64(i)
			}
		}})
		if err != nil {
			return err
		}
		if found < 0 {
			return fmt.Errorf("audit prove: no verified entry holds message %s (of %d entries)", *id, rep.Size)
		}
		cp, err := audit.ParseCheckpoint(rep.Checkpoint, v)
		if err != nil {
			return err
		}
		p, err = audit.ProveAt(ctx, src, rep.Checkpoint, cp, uint64(found))
		if err != nil {
			return err
		}
	} else if p, err = audit.Prove(ctx, src, v, uint64(*index)); err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(p)
}

// auditCheckProof is "sigil audit check-proof": a proof, offline.
func auditCheckProof(args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("audit check-proof", flag.ContinueOnError)
	fs.SetOutput(stdout)
	vkey := fs.String("vkey", "", "the trusted checkpoint key (file or key text; required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *vkey == "" || fs.NArg() > 1 {
		return badUsage(fs, "audit check-proof: --vkey and at most one PROOF-FILE")
	}
	v, _, err := readVKey(*vkey)
	if err != nil {
		return err
	}
	in := stdin
	if fs.NArg() == 1 {
		f, err := os.Open(fs.Arg(0))
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	data, err := io.ReadAll(io.LimitReader(in, 1<<20))
	if err != nil {
		return err
	}
	p, err := audit.ParseProof(data)
	if err != nil {
		return err
	}
	e, cp, err := p.Check(v)
	if err != nil {
		return fmt.Errorf("audit check-proof: %w", err)
	}
	fmt.Fprintf(stdout, "OK entry %d of %d in log %s: %s entry, received %s", p.Index, cp.Size, cp.Origin, e.Kind, time.UnixMilli(e.Time).UTC().Format(time.RFC3339Nano))
	if e.Node != "" {
		fmt.Fprintf(stdout, " by node %s", e.Node)
	}
	if e.Frame != "" {
		if claims, err := protocol.UnsafeClaims([]byte(e.Frame)); err == nil {
			fmt.Fprintf(stdout, "\n  frame (its signature is checked by audit verify): %s", claims)
		}
	}
	fmt.Fprintln(stdout)
	return nil
}

// auditExport is "sigil audit export": a self-contained bundle of a
// range of entries that "sigil audit verify --vkey K BUNDLE" checks.
func auditExport(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("audit export", flag.ContinueOnError)
	fs.SetOutput(stdout)
	vkey := fs.String("vkey", "", "the trusted checkpoint key (file or key text); default the log's own")
	from := fs.String("from", "0", "the first entry exported")
	to := fs.String("to", "", "the entry after the last exported (default: the checkpoint's size)")
	out := fs.String("out", "", "the bundle file (default stdout)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return badUsage(fs, "audit export: one LOG")
	}
	src, v, text, err := openAuditLog(ctx, fs.Arg(0), *vkey)
	if err != nil {
		return err
	}
	f, err := strconv.ParseUint(*from, 10, 64)
	if err != nil {
		return fmt.Errorf("--from: %w", err)
	}
	var t uint64
	if *to == "" {
		raw, err := src.ReadCheckpoint(ctx)
		if err != nil {
			return err
		}
		cp, err := audit.ParseCheckpoint(raw, v)
		if err != nil {
			return err
		}
		t = cp.Size
	} else if t, err = strconv.ParseUint(*to, 10, 64); err != nil {
		return fmt.Errorf("--to: %w", err)
	}
	w := stdout
	if *out != "" {
		file, err := os.Create(*out)
		if err != nil {
			return err
		}
		defer file.Close()
		w = file
	}
	return audit.Export(ctx, src, v, text, f, t, w)
}
