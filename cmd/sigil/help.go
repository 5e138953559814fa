package main

import (
	"errors"
	"flag"
	"fmt"
	"runtime/debug"
	"strings"
)

// newFlagSet is a subcommand's flag set whose help (-h) shows its
// positional arguments: "usage: sigil NAME SYNOPSIS", what it does, then
// its flags.
func newFlagSet(name, synopsis, about string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		w := fs.Output()
		for i, s := range strings.Split(synopsis, "\n") {
			if i == 0 {
				fmt.Fprintf(w, "usage: sigil %s %s\n", name, s)
			} else {
				fmt.Fprintf(w, "       sigil %s %s\n", name, s)
			}
		}
		if about != "" {
			fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(about))
		}
		fmt.Fprintln(w, "\nflags:")
		fs.PrintDefaults()
	}
	return fs
}

// usageError is a command line that does not fit the command: sigil
// prints it with the command's usage and exits 2.
type usageError struct {
	fs  *flag.FlagSet
	msg string
}

func (e *usageError) Error() string { return e.msg }

// badUsage reports a command line that does not fit fs's command.
func badUsage(fs *flag.FlagSet, format string, args ...any) error {
	return &usageError{fs: fs, msg: fmt.Sprintf(format, args...)}
}

// onlyFlags refuses the flags set on the command line that are not among
// allowed: "user remove --roles" is a mistake, not a no-op.
func onlyFlags(fs *flag.FlagSet, what string, allowed ...string) error {
	var bad []string
	fs.Visit(func(f *flag.Flag) {
		for _, a := range allowed {
			if f.Name == a {
				return
			}
		}
		bad = append(bad, "--"+f.Name)
	})
	if len(bad) > 0 {
		return badUsage(fs, "%s does not apply to %s", strings.Join(bad, ", "), what)
	}
	return nil
}

// version is the module version and VCS revision sigil was built from.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "sigil (unknown version)"
	}
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	out := "sigil " + v
	if rev != "" {
		out += " (" + rev[:min(12, len(rev))] + dirty + ")"
	}
	return out + " " + bi.GoVersion
}

// isHelp reports a -h or --help that the flag package answered.
func isHelp(err error) bool { return errors.Is(err, flag.ErrHelp) }
