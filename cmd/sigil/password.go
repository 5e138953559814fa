package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/term"
)

// readPassword reads a password: on a terminal, after prompt (on stderr)
// and without echo; otherwise — a pipe, a file, a script — the first line
// of stdin. confirm asks twice on a terminal (a new password).
func readPassword(stdin io.Reader, prompt string, confirm bool) (string, error) {
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		read := func(p string) (string, error) {
			restore, err := echoOff(int(f.Fd()))
			if err != nil {
				return "", fmt.Errorf("turning the terminal's echo off: %w", err)
			}
			defer restore()
			fmt.Fprint(os.Stderr, p)
			b, err := term.ReadPassword(int(f.Fd()))
			fmt.Fprintln(os.Stderr)
			if err != nil {
				return "", fmt.Errorf("reading the password from the terminal: %w", err)
			}
			return string(b), nil
		}
		pw, err := read(prompt)
		if err != nil || !confirm {
			return pw, err
		}
		again, err := read("again: ")
		if err != nil {
			return "", err
		}
		if again != pw {
			return "", errors.New("the passwords do not match")
		}
		return pw, nil
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && (!errors.Is(err, io.EOF) || line == "") {
		return "", errors.New("no password: type it on a terminal, or give it as the first line of stdin")
	}
	return strings.TrimRight(line, "\r\n"), nil
}
