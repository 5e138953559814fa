package main

import (
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/sigil-ws/sigil/internal/strictjson"
)

// parseConfigFile decodes a JSON config file: an object whose member names
// are flag names and whose values are strings, numbers, booleans or arrays
// of strings (joined with commas). It is strict JSON (internal/strictjson:
// no duplicate names, valid UTF-8, nesting at most 4 deep). Unknown names
// are errors.
func parseConfigFile(data []byte, known func(string) bool) (map[string]string, error) {
	var raw map[string]json.RawMessage
	if err := strictjson.Unmarshal(data, &raw, &strictjson.Options{MaxDepth: 4}); err != nil {
		return nil, fmt.Errorf("config: must be a strict JSON object: %w", err)
	}
	out := make(map[string]string, len(raw))
	for name, v := range raw {
		if !known(name) {
			return nil, fmt.Errorf("config: unknown setting %q", name)
		}
		var s string
		var b bool
		var n json.Number
		var list []string
		switch {
		case json.Unmarshal(v, &s) == nil:
			out[name] = s
		case json.Unmarshal(v, &b) == nil:
			out[name] = strconv.FormatBool(b)
		case json.Unmarshal(v, &n) == nil:
			out[name] = n.String()
		case json.Unmarshal(v, &list) == nil:
			out[name] = strings.Join(list, ",")
		default:
			return nil, fmt.Errorf("config: %q must be a string, number, boolean or array of strings", name)
		}
	}
	return out, nil
}

// envName is the environment variable of a flag: SIGIL_ + upper snake case.
func envName(flagName string) string {
	return "SIGIL_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// applySources fills the flags not given on the command line from the
// environment, then from the config file: flags > SIGIL_* > file.
func applySources(fs *flag.FlagSet, configPath string, getenv func(string) string) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var file map[string]string
	if configPath != "" {
		data, err := os.ReadFile(configPath)
		if err != nil {
			return fileError("--config", configPath, nil, err)
		}
		file, err = parseConfigFile(data, func(n string) bool { return fs.Lookup(n) != nil && n != "config" })
		if err != nil {
			return fileError("--config", configPath, data, err)
		}
	}
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		if v := getenv(envName(f.Name)); v != "" {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s: %w", envName(f.Name), e)
			}
			return
		}
		if v, ok := file[f.Name]; ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("config %s: %w", f.Name, e)
			}
		}
	})
	return err
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func b64dec(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }
