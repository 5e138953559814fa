package main

import "golang.org/x/sys/unix"

// echoOff turns the terminal's echo off before the prompt is printed, as
// getpass(3) does: a user who types (or pastes) as soon as the prompt
// appears would otherwise see the first characters echoed in the moment
// before term.ReadPassword turns echo off itself. restore puts the
// terminal back as it was.
func echoOff(fd int) (restore func(), err error) {
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, err
	}
	quiet := *old
	quiet.Lflag &^= unix.ECHO
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &quiet); err != nil {
		return nil, err
	}
	return func() { _ = unix.IoctlSetTermios(fd, unix.TCSETS, old) }, nil
}
