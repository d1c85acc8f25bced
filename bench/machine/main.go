// Command machine measures what a machine charges for the two things the
// scale figures wait on most (docs/benchmarks.md): touching fresh memory (a
// page fault, what a growing controller pays for every new connection's
// stacks and records) and a system call (what every frame on a socket
// costs). Figures of bench/scale from two machines compare only together
// with these.
//
//	go run ./machine            (in bench/)
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"
)

func main() {
	mib := flag.Int("mib", 1024, "fresh memory to touch, MiB")
	calls := flag.Int("calls", 200_000, "system calls to time")
	flag.Parse()
	if err := run(os.Stdout, *mib, *calls); err != nil {
		fmt.Fprintln(os.Stderr, "machine:", err)
		os.Exit(1)
	}
}

// run prints the cost of a page fault (the first touch of a page of fresh
// anonymous memory, against a second touch), of a write(2) to /dev/null and
// of a write and read through a pipe.
func run(w io.Writer, mib, calls int) error {
	size := mib << 20
	page := os.Getpagesize()
	mem, err := syscall.Mmap(-1, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return fmt.Errorf("mmap: %w", err)
	}
	defer syscall.Munmap(mem)
	touch := func(v byte) time.Duration {
		start := time.Now()
		for i := 0; i < size; i += page {
			mem[i] = v
		}
		return time.Since(start)
	}
	pages := float64(size / page)
	first, second := touch(1), touch(2)
	fmt.Fprintf(w, "page fault (first touch of fresh memory): %.2f µs a page; touching it again: %.3f µs (%d MiB)\n",
		us(first)/pages, us(second)/pages, mib)

	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer null.Close()
	var p [2]int
	if err := syscall.Pipe(p[:]); err != nil {
		return fmt.Errorf("pipe: %w", err)
	}
	defer syscall.Close(p[0])
	defer syscall.Close(p[1])
	b := []byte{0}
	start := time.Now()
	for range calls {
		if _, err := syscall.Write(int(null.Fd()), b); err != nil {
			return fmt.Errorf("write: %w", err)
		}
	}
	fmt.Fprintf(w, "system call (write(2) to %s): %.2f µs\n", os.DevNull, us(time.Since(start))/float64(calls))
	start = time.Now()
	for range calls {
		if _, err := syscall.Write(p[1], b); err != nil {
			return fmt.Errorf("pipe write: %w", err)
		}
		if _, err := syscall.Read(p[0], b); err != nil {
			return fmt.Errorf("pipe read: %w", err)
		}
	}
	fmt.Fprintf(w, "pipe write and read: %.2f µs\n", us(time.Since(start))/float64(calls))
	return nil
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }
