//go:build !linux

package main

// echoOff does nothing here: term.ReadPassword turns echo off itself,
// after the prompt is printed.
func echoOff(fd int) (restore func(), err error) { return func() {}, nil }
