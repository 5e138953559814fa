// Package sigiltest is the shared test harness of Sigil's server, client and
// command tests. It is test support, not API: nothing outside tests imports
// it.
//
// Clock is the one test clock: a test moves it forward instead of sleeping
// through token lifetimes.
//
// StartRedis runs a real redis-server process for a test. Tests that need
// Redis fail, never skip, when redis-server is not installed: the cluster
// code must not go untested because a machine lacks a package.
package sigiltest
