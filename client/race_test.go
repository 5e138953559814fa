//go:build race

package client_test

// raceEnabled: the race detector slows signing and verifying tenfold or
// more; the longest tests make fewer frames under it.
const raceEnabled = true
