//go:build !unix

package grpcchannel

func fdLimit() (uint64, bool) { return 0, false }
