// Command sigil runs and administers a Sigil server.
//
//	sigil serve [flags]             run the server (sigil serve --demo for the demo)
//	sigil keygen [flags]            create a signing key (a new one signs after restart)
//	sigil user add|passwd|remove    manage the users file
//	sigil login|send|listen         a command-line client (package client): one
//	                                login, any number of commands at once
//	sigil verify                    check archived messages offline
//	sigil version                   the version sigil was built from
//	sigil load [flags]              measure throughput and latency against a server
//	sigil audit verify|prove|check-proof|export   the audit log, offline
//	sigil bench [flags]             the server's cost per message against raw Ed25519 and a plain relay
//
// Run "sigil <command> -h" for the flags of each command.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serve(args[1:], stdout, stderr)
	case "keygen":
		err = keygen(args[1:], stdout)
	case "user":
		err = userCmd(args[1:], stdin, stdout)
	case "login":
		err = runLogin(context.Background(), args[1:], stdin, stdout)
	case "send":
		err = runSend(context.Background(), args[1:], stdin, stdout)
	case "listen":
		err = runListen(context.Background(), args[1:], stdout)
	case "verify":
		err = runVerify(context.Background(), args[1:], stdin, stdout)
	case "audit":
		err = runAudit(context.Background(), args[1:], stdin, stdout)
	case "load":
		err = runLoad(context.Background(), args[1:], stdin, stdout, stderr)
	case "bench":
		err = runBench(context.Background(), args[1:], stdout, stderr)
	case "help", "-h", "--help":
		if len(args) == 2 && args[0] == "help" && args[1] != "help" {
			return run([]string{args[1], "-h"}, stdin, stdout, stderr) // sigil help send
		}
		usage(stdout)
		return 0
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, version())
		return 0
	default:
		fmt.Fprintf(stderr, "sigil: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	var ue *usageError
	switch {
	case err == nil:
		return 0
	case isHelp(err):
		return 0 // the flag package printed the command's help
	case errors.As(err, &ue):
		fmt.Fprintln(stderr, "sigil:", err)
		if ue.fs != nil {
			ue.fs.SetOutput(stderr)
			ue.fs.Usage()
		}
		return 2
	}
	fmt.Fprintln(stderr, "sigil:", err)
	return 1
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  sigil serve [flags]                 run the server; --demo for a local demo
  sigil keygen [--data-dir D | --out F] [--alg EdDSA|ES256]
  sigil user add [--users F] [--roles r1,r2] [--hash argon2id|bcrypt] NAME   (asks for the password)
  sigil user passwd [--users F] NAME                                          (asks for the password)
  sigil user remove [--users F] NAME
  sigil login --server URL --user NAME       (asks for the password; from a pipe: its first line)
  sigil send [--encrypt] CHANNEL|@USER MESSAGE | sigil send --stdin CHANNEL|@USER
  sigil listen [--json] [--encrypt] [--count N] [--since FILE] CHANNEL|@   (@: your direct messages)
  sigil verify --jwks FILE|URL [--json] [FRAME-FILE]   verify a delivery offline (frames from listen --json)
  sigil verify --jwks FILE|URL --token T --key JWK-FILE [--json] [FRAME-FILE]   a client frame and its token
  sigil audit verify|prove|check-proof|export ...   the audit log, offline ("sigil audit -h")
  sigil version                        print the version (also --version)
  sigil help COMMAND                   a command's arguments and flags (also sigil COMMAND -h)
  sigil load --server URL[,URL...] --user NAME[,NAME...] [--password-file F] [--conns N] [--subs M]
             [--channel C] [--rate R] [--duration D] [--count K] [--size BYTES] [--encrypt] [--stats] [--json]
                                      (passwords on stdin unless --password-file; -h for all flags)
  sigil bench [--conns N] [--frames N] [--rate R] [--fanout N] [--idle N] [--sigil BINARY] [--json]
                                      start a sigil serve and measure it against raw Ed25519 and a plain relay
`)
}
