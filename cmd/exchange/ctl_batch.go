package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/exchangekit/exchange/management"
)

// Bounds of `ctl batches watch --interval`: often enough to see every status
// of a quick batch, rarely enough not to load the controller.
const (
	minWatchInterval = 10 * time.Millisecond
	maxWatchInterval = time.Minute
)

// maxBatchFile bounds what `ctl batches create -f` reads; the API's own
// body limit is lower.
const maxBatchFile = 64 << 20

func newCtlBatchCreateCommand(f *ctlFlags, stdout io.Writer) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "create -f FILE|-",
		Short: "Create a batch from a JSON BatchRequest in a file, or on stdin (-f -), and print it",
		Long: `Create a batch from a JSON BatchRequest (POST /exchange/batchs), read from
FILE, or from stdin with -f -, and print the batch as created. For example:

  {"targetId": "t1", "key": "k1", "maxRetry": 3,
   "commands": [{"type": "ECHO", "payload": {"x": 1}}]}

Then follow it with: exchange ctl batches watch ID`,
		Args: ctlArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return &exitError{code: exitUsage, err: errors.New("batches create needs -f FILE (or -f - for stdin)")}
			}
			data, err := readInput(cmd, file)
			if err != nil {
				return &exitError{code: exitUsage, err: fmt.Errorf("-f: %w", err)}
			}
			var req management.BatchRequest
			dec := json.NewDecoder(bytes.NewReader(data))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&req); err != nil {
				return &exitError{code: exitUsage, err: fmt.Errorf("-f %s: not a batch request: %w", file, err)}
			}
			if dec.More() {
				return &exitError{code: exitUsage, err: fmt.Errorf("-f %s: more than one JSON value", file)}
			}
			return ctlRun(cmd.Context(), f, ctlRequestTimeout, func(ctx context.Context, c *management.Client) error {
				b, err := c.CreateBatch(ctx, req)
				if err != nil {
					return ctlError(err, "")
				}
				if f.output == "json" {
					return printJSON(stdout, b)
				}
				fmt.Fprintf(stdout, "created batch %s\n\n", cell(b.ID))
				return printBatch(stdout, b)
			})
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "file holding the JSON BatchRequest, - for stdin")
	return cmd
}

// readInput reads name, or the command's stdin when name is "-".
func readInput(cmd *cobra.Command, name string) ([]byte, error) {
	var r io.Reader
	if name == "-" {
		r = cmd.InOrStdin()
	} else {
		fh, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		defer fh.Close()
		r = fh
	}
	data, err := io.ReadAll(io.LimitReader(r, maxBatchFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxBatchFile {
		return nil, fmt.Errorf("more than %d bytes", maxBatchFile)
	}
	return data, nil
}

func newCtlBatchWatchCommand(f *ctlFlags, stdout io.Writer) *cobra.Command {
	var interval, timeout time.Duration
	cmd := &cobra.Command{
		Use:   "watch ID [--interval 1s] [--timeout 0]",
		Short: "Wait until a batch ends, printing its status changes",
		Long: `Wait until a batch ends, polling GET /exchange/batchs/ID every --interval and
printing a line whenever its status, retry count or completed commands change
(-o json: one JSON batch per line). Exit code 0 when the batch SUCCEEDED, 6
when it ended in ERROR, 5 when there is no such batch (or it was cancelled
meanwhile), 1 when --timeout passed first (0, the default: no limit; Ctrl-C
stops it too).`,
		Args: ctlBatchID,
		RunE: func(cmd *cobra.Command, args []string) error {
			if interval < minWatchInterval || interval > maxWatchInterval {
				return &exitError{code: exitUsage, err: fmt.Errorf("--interval %s: must be between %s and %s", interval, minWatchInterval, maxWatchInterval)}
			}
			if timeout < 0 {
				return &exitError{code: exitUsage, err: fmt.Errorf("--timeout %s: must not be negative", timeout)}
			}
			ctx := cmd.Context()
			if timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeoutCause(ctx, timeout, errWatchTimeout)
				defer cancel()
			}
			// Each poll is one bounded request; the watch as a whole is
			// bounded by --timeout only.
			return ctlRun(ctx, f, 0, func(ctx context.Context, c *management.Client) error {
				return watchBatch(ctx, c, args[0], interval, f.output == "json", stdout)
			})
		},
	}
	cmd.Flags().DurationVar(&interval, "interval", time.Second, fmt.Sprintf("how often to poll the batch (%s to %s)", minWatchInterval, maxWatchInterval))
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "give up after this long (0: no limit)")
	return cmd
}

var errWatchTimeout = errors.New("--timeout passed")

// watchBatch polls batch id until it ends, printing each change.
func watchBatch(ctx context.Context, c *management.Client, id string, interval time.Duration, asJSON bool, w io.Writer) error {
	t := time.NewTimer(0)
	defer t.Stop()
	last := ""
	for {
		select {
		case <-ctx.Done():
			if errors.Is(context.Cause(ctx), errWatchTimeout) {
				return &exitError{code: 1, err: fmt.Errorf("batch %s has not ended: %w (last seen %s)", id, errWatchTimeout, orDash(last))}
			}
			return ctx.Err()
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, ctlRequestTimeout)
		b, err := c.Batch(rctx, id)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				continue // reported by the select above
			}
			return ctlError(err, fmt.Sprintf("no batch %s (cancelled?)", id))
		}
		done := 0
		for _, bc := range b.Commands {
			if bc.Status == "SUCCEEDED" {
				done++
			}
		}
		state := fmt.Sprintf("%s retry %d/%d done %d/%d", b.Status, b.Retry, b.MaxRetry, done, len(b.Commands))
		if state != last {
			last = state
			var err error
			if asJSON {
				err = json.NewEncoder(w).Encode(b)
			} else {
				_, err = fmt.Fprintf(w, "%s  %s  %s%s\n", time.Now().UTC().Format(time.RFC3339), cell(b.ID), state, errSuffix(b.ErrorDetails))
			}
			if err != nil {
				return fmt.Errorf("write output: %w", err)
			}
		}
		switch b.Status {
		case "SUCCEEDED":
			return nil
		case "ERROR":
			return &exitError{code: exitRemoteFailure, err: fmt.Errorf("batch %s ended in ERROR: %s", id, orDash(deref(b.ErrorDetails)))}
		}
		t.Reset(interval)
	}
}

func errSuffix(s *string) string {
	if s == nil || *s == "" {
		return ""
	}
	return "  " + cell(*s)
}
