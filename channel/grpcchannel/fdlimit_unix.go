//go:build unix

package grpcchannel

import "syscall"

func fdLimit() (uint64, bool) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil || l.Cur == 0 {
		return 0, false
	}
	return uint64(l.Cur), true //nolint:unconvert // Cur is int64 on some BSDs
}
