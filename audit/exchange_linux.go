package audit

import "golang.org/x/sys/unix"

// exchange swaps the files a and b atomically (renameat2 with
// RENAME_EXCHANGE): neither is created nor freed. It fails if either is
// missing or the file system cannot.
func exchange(a, b string) error {
	return unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE)
}
