package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/exchangekit/exchange/management"
)

func init() { subcommands = append(subcommands, newCtlCommand) }

// Exit codes of exchange ctl.
const (
	exitUsage         = 2 // bad flags or arguments, or a request the API rejected as invalid (400)
	exitUnreachable   = 3 // the controller cannot be reached, or did not answer in time
	exitUnauthorized  = 4 // the token is missing or wrong
	exitNotFound      = 5 // not found, or the target has no channel
	exitRemoteFailure = 6 // the command failed at the connector, timed out, or the channel was busy
)

// ctlRequestTimeout bounds every ctl request but send (which waits for
// --timeout plus ctlSendMargin).
const (
	ctlRequestTimeout = 30 * time.Second
	ctlSendMargin     = 10 * time.Second
)

type ctlFlags struct {
	addr   string
	token  string
	output string
}

func newCtlCommand(stdout, stderr io.Writer) *cobra.Command {
	f := &ctlFlags{}
	cmd := &cobra.Command{
		Use:   "ctl [--addr URL] [--token T] [-o table|json] targets|channels|batches|send|cluster|snapshot|events",
		Short: "Query and drive a controller through its management API",
		Long: `Query and drive a controller through its management API (HTTP, port 7480 by default).

Exit codes: 0 success, 2 usage or invalid request, 3 controller unreachable or
not answering in time, 4 unauthorized, 5 not found or no channel for the
target, 6 the command failed at the connector, timed out there, or the channel
was busy (batches watch: the batch ended in ERROR), 1 anything else.`,
		Args: cobra.ArbitraryArgs,
		RunE: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return &exitError{code: exitUsage, err: errors.New("ctl needs a command: targets, channels, batches, send, cluster, snapshot or events")}
			}
			return &exitError{code: exitUsage, err: fmt.Errorf("unknown ctl command %q: want targets, channels, batches, send, cluster, snapshot or events", args[0])}
		},
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.addr, "addr", "http://127.0.0.1:7480", "management API address of the controller")
	pf.StringVar(&f.token, "token", "", "management bearer token (env EXCHANGE_MANAGEMENT_TOKEN, the controller's --management-token)")
	_ = pf.SetAnnotation("token", envAnnotation, []string{"EXCHANGE_MANAGEMENT_TOKEN"})
	pf.StringVarP(&f.output, "output", "o", "table", "output format: table or json (any case)")
	cmd.AddCommand(
		newCtlTargetsCommand(f, stdout),
		newCtlChannelsCommand(f, stdout),
		newCtlBatchesCommand(f, stdout),
		newCtlSendCommand(f, stdout),
		newCtlClusterCommand(f, stdout),
		newCtlSnapshotCommand(f, stdout),
		newCtlEventsCommand(f, stdout),
	)
	return cmd
}

// ctlArgs rejects positional arguments with the usage exit code.
func ctlArgs(_ *cobra.Command, args []string) error {
	if len(args) > 0 {
		return &exitError{code: exitUsage, err: fmt.Errorf("unexpected argument %q", args[0])}
	}
	return nil
}

// ctlRun validates the output flag, builds a client for one command, runs fn
// with it and a context bounded by timeout (none if 0), and turns failures
// into exit codes.
func ctlRun(ctx context.Context, f *ctlFlags, timeout time.Duration, fn func(ctx context.Context, c *management.Client) error) error {
	switch o := strings.ToLower(f.output); o {
	case "table", "json":
		f.output = o
	default:
		return &exitError{code: exitUsage, err: fmt.Errorf("-o %q: want table or json", f.output)}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	defer tr.CloseIdleConnections()
	c, err := management.NewClient(f.addr, f.token, &http.Client{Transport: tr})
	if err != nil {
		return &exitError{code: exitUsage, err: fmt.Errorf("--addr: %w", err)}
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	return fn(ctx, c)
}

// ctlError turns a client error into an error with the right exit code.
// notFound, if set, rewrites the message of a 404.
func ctlError(err error, notFound string) error {
	var (
		unreachable *management.UnreachableError
		api         *management.APIError
	)
	switch {
	case errors.As(err, &unreachable):
		return &exitError{code: exitUnreachable, err: err}
	case errors.As(err, &api):
		switch {
		case api.StatusCode == http.StatusUnauthorized:
			return &exitError{code: exitUnauthorized, err: errors.New("unauthorized: check --token")}
		case api.StatusCode == http.StatusNotFound:
			if notFound != "" {
				return &exitError{code: exitNotFound, err: errors.New(notFound)}
			}
			return &exitError{code: exitNotFound, err: fmt.Errorf("not found: %s", api.Message)}
		case api.StatusCode == http.StatusBadRequest:
			return &exitError{code: exitUsage, err: fmt.Errorf("invalid request: %s", api.Message)}
		case api.StatusCode == http.StatusServiceUnavailable && api.RetryAfter > 0:
			return &exitError{code: exitRemoteFailure, err: fmt.Errorf("%s (retry after %s)", api.Message, api.RetryAfter)}
		case api.StatusCode == http.StatusBadGateway || api.StatusCode == http.StatusGatewayTimeout:
			return &exitError{code: exitRemoteFailure, err: errors.New(api.Message)}
		}
		return &exitError{code: 1, err: fmt.Errorf("the controller answered %d: %s", api.StatusCode, api.Message)}
	case errors.Is(err, context.DeadlineExceeded):
		// The management API itself did not answer in time (a connector
		// that does not reply is the API's 504, above): the controller is
		// as good as unreachable.
		return &exitError{code: exitUnreachable, err: fmt.Errorf("the controller did not answer in time: %w", err)}
	}
	return err
}

// printJSON writes v indented, for -o json.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

// table writes rows aligned in columns, each cell made safe by cell.
func table(w io.Writer, header string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	writeRows(tw, rows)
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

// writeRows writes rows to tw, tab-separated, each cell made safe by cell.
func writeRows(tw io.Writer, rows [][]string) {
	for _, r := range rows {
		cells := make([]string, len(r))
		for i, c := range r {
			cells[i] = cell(c)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
}

// cell makes s safe to print in a table: a string holding a character that
// is not printable (strconv.IsPrint: control characters, terminal escapes,
// line breaks, bidirectional formatting) or a tab, or that is not valid
// UTF-8, is printed quoted with Go escapes (strconv.Quote). Ids come from
// connectors, and from the replicated state, which an older node may have
// filled before the identity limits existed: whatever they hold, they can
// neither forge a row nor drive the terminal. Printable ids are printed as
// they are.
func cell(s string) string {
	if !utf8.ValidString(s) {
		return strconv.Quote(s)
	}
	for _, r := range s {
		if r == '\t' || !strconv.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

func newCtlTargetsCommand(f *ctlFlags, stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "targets",
		Short: "List the targets, with their channels, primary and batches",
		Long: `List the targets: those with channels and those that only have batches
(GET /exchange/targets?all=true), with their channel counts, their primary
(its connector id and channel id), its fencing epoch and their batch count.`,
		Args: ctlArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return ctlRun(cmd.Context(), f, ctlRequestTimeout, func(ctx context.Context, c *management.Client) error {
				ts, err := c.AllTargets(ctx)
				if err != nil {
					return ctlError(err, "")
				}
				if f.output == "json" {
					return printJSON(stdout, ts)
				}
				rows := make([][]string, 0, len(ts))
				for _, t := range ts {
					active, primary, primaryChannel, epoch := 0, "-", "-", "-"
					for _, ch := range t.Channels {
						if ch.Active {
							active++
						}
						if ch.Primary {
							primary, primaryChannel, epoch = orDash(ch.ConnectorID), ch.ID, fmt.Sprint(ch.Epoch)
						}
					}
					rows = append(rows, []string{t.ID, fmt.Sprint(len(t.Channels)), fmt.Sprint(active), primary, primaryChannel, epoch, fmt.Sprint(len(t.Batchs))})
				}
				return table(stdout, "TARGET\tCHANNELS\tACTIVE\tPRIMARY\tPRIMARY-CHANNEL\tEPOCH\tBATCHES", rows)
			})
		},
	}
}

func newCtlChannelsCommand(f *ctlFlags, stdout io.Writer) *cobra.Command {
	var target string
	cmd := &cobra.Command{
		Use:   "channels [--target T]",
		Short: "List the channels, of every target or of one",
		Args:  ctlArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return ctlRun(cmd.Context(), f, ctlRequestTimeout, func(ctx context.Context, c *management.Client) error {
				chs, err := c.Channels(ctx, management.ChannelQuery{TargetID: target})
				if err != nil {
					return ctlError(err, "")
				}
				if f.output == "json" {
					return printJSON(stdout, chs)
				}
				rows := make([][]string, 0, len(chs))
				for _, ch := range chs {
					rows = append(rows, []string{
						ch.ID, ch.TargetID, orDash(ch.ConnectorID), orDash(ch.Node), fmt.Sprint(ch.Active), fmt.Sprint(ch.Primary),
						fmt.Sprint(ch.Epoch), fmt.Sprint(ch.InFlight), formatTime(&ch.RegisteredAt),
					})
				}
				return table(stdout, "CHANNEL\tTARGET\tCONNECTOR\tNODE\tACTIVE\tPRIMARY\tEPOCH\tIN-FLIGHT\tREGISTERED", rows)
			})
		},
	}
	cmd.Flags().StringVar(&target, "target", "", "only this target's channels")
	return cmd
}

func newCtlBatchesCommand(f *ctlFlags, stdout io.Writer) *cobra.Command {
	var target, status string
	cmd := &cobra.Command{
		Use:   "batches [--target T] [--status S] | batches create|get|watch|cancel ...",
		Short: "List the batches (optionally of one target and/or with one status); create, show, watch or cancel one",
		Args:  ctlArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return ctlRun(cmd.Context(), f, ctlRequestTimeout, func(ctx context.Context, c *management.Client) error {
				bs, err := c.Batches(ctx, management.BatchQuery{TargetID: target, Status: status})
				if err != nil {
					return ctlError(err, "")
				}
				if f.output == "json" {
					return printJSON(stdout, bs)
				}
				rows := make([][]string, 0, len(bs))
				for _, b := range bs {
					done := 0
					for _, bc := range b.Commands {
						if bc.Status == "SUCCEEDED" {
							done++
						}
					}
					rows = append(rows, []string{
						b.ID, orDash(deref(b.Key)), b.TargetID, b.Status, fmt.Sprintf("%d/%d", b.Retry, b.MaxRetry),
						fmt.Sprintf("%d/%d", done, len(b.Commands)), formatTime(b.NextAttemptAt), orDash(deref(b.ErrorDetails)),
					})
				}
				return table(stdout, "BATCH\tKEY\tTARGET\tSTATUS\tRETRY\tDONE\tNEXT-ATTEMPT\tERROR", rows)
			})
		},
	}
	cmd.Flags().StringVar(&target, "target", "", "only this target's batches")
	cmd.Flags().StringVar(&status, "status", "", "only batches with this status: CREATED, PENDING, IN_PROGRESS, SUCCEEDED or ERROR")
	cmd.AddCommand(newCtlBatchCreateCommand(f, stdout), newCtlBatchGetCommand(f, stdout),
		newCtlBatchWatchCommand(f, stdout), newCtlBatchCancelCommand(f, stdout))
	return cmd
}

// ctlBatchID takes the one positional argument of batches get and cancel.
func ctlBatchID(_ *cobra.Command, args []string) error {
	switch {
	case len(args) == 0:
		return &exitError{code: exitUsage, err: errors.New("a batch id is required")}
	case len(args) > 1:
		return &exitError{code: exitUsage, err: fmt.Errorf("unexpected argument %q", args[1])}
	case args[0] == "":
		return &exitError{code: exitUsage, err: errors.New("the batch id must not be empty")}
	}
	return nil
}

func newCtlBatchGetCommand(f *ctlFlags, stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "get ID",
		Short: "Show one batch and its commands",
		Args:  ctlBatchID,
		RunE: func(cmd *cobra.Command, args []string) error {
			return ctlRun(cmd.Context(), f, ctlRequestTimeout, func(ctx context.Context, c *management.Client) error {
				b, err := c.Batch(ctx, args[0])
				if err != nil {
					return ctlError(err, fmt.Sprintf("no batch %s", args[0]))
				}
				if f.output == "json" {
					return printJSON(stdout, b)
				}
				return printBatch(stdout, b)
			})
		},
	}
}

func newCtlBatchCancelCommand(f *ctlFlags, stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a batch: delete it, and print it as it was",
		Long: `Cancel a batch: delete it whatever its status, and print it as it was when
cancelled. An unfinished batch sends no further command (one already sent may
still be executed by the connector); a finished one is removed before its
retention ends.`,
		Args: ctlBatchID,
		RunE: func(cmd *cobra.Command, args []string) error {
			return ctlRun(cmd.Context(), f, ctlRequestTimeout, func(ctx context.Context, c *management.Client) error {
				b, err := c.CancelBatch(ctx, args[0])
				if err != nil {
					return ctlError(err, fmt.Sprintf("no batch %s", args[0]))
				}
				if f.output == "json" {
					return printJSON(stdout, b)
				}
				fmt.Fprintf(stdout, "cancelled batch %s (it was %s)\n\n", cell(b.ID), b.Status)
				return printBatch(stdout, b)
			})
		},
	}
}

// printBatch writes one batch: its fields, then a table of its commands.
func printBatch(w io.Writer, b management.Batch) error {
	rows := [][]string{
		{"BATCH", b.ID},
		{"KEY", orDash(deref(b.Key))},
		{"TARGET", b.TargetID},
		{"STATUS", b.Status},
		{"RETRY", fmt.Sprintf("%d/%d", b.Retry, b.MaxRetry)},
		{"NEXT-ATTEMPT", formatTime(b.NextAttemptAt)},
		{"CREATED", formatTime(&b.CreatedAt)},
		{"ERROR", orDash(deref(b.ErrorDetails))},
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	writeRows(tw, rows)
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	fmt.Fprintln(w)
	cmds := make([][]string, 0, len(b.Commands))
	for _, bc := range b.Commands {
		cmds = append(cmds, []string{bc.Command.ID, bc.Command.Type, bc.Status, orDash(deref(bc.ErrorDetails))})
	}
	return table(w, "COMMAND\tTYPE\tSTATUS\tERROR", cmds)
}

func newCtlSendCommand(f *ctlFlags, stdout io.Writer) *cobra.Command {
	var (
		target, typ, payload string
		timeout              time.Duration
		primary              bool
	)
	cmd := &cobra.Command{
		Use:   "send --target T --type TYPE [--payload JSON|@FILE|-] [--primary] [--timeout 30s]",
		Short: "Send one command to a target and print the reply and who answered",
		Long: `Send one command to a target and print the reply, with the channel, connector
and node that answered. Without --primary the controller picks any active
channel of the target (the least busy); with --primary only the target's
primary channel (exit code 5 if it has none). A reply with status ERROR is
printed too, and the exit code is then 6.`,
		Args: ctlArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if target == "" || typ == "" {
				return &exitError{code: exitUsage, err: errors.New("send needs --target and --type")}
			}
			if payload == "-" || strings.HasPrefix(payload, "@") { // neither is JSON
				data, err := readInput(cmd, strings.TrimPrefix(payload, "@"))
				if err != nil {
					return &exitError{code: exitUsage, err: fmt.Errorf("--payload: %w", err)}
				}
				payload = string(bytes.TrimSpace(data))
				if payload == "" {
					return &exitError{code: exitUsage, err: errors.New("--payload: empty input; a JSON value is expected")}
				}
			}
			if payload != "" && !json.Valid([]byte(payload)) {
				return &exitError{code: exitUsage, err: errors.New("--payload is not valid JSON")}
			}
			if timeout <= 0 {
				return &exitError{code: exitUsage, err: fmt.Errorf("--timeout %s: must be positive", timeout)}
			}
			req := management.CommandRequest{Type: typ, TimeoutMs: timeout.Milliseconds(), Primary: primary}
			noChannel := fmt.Sprintf("target %s has no channel", target)
			if primary {
				noChannel = fmt.Sprintf("target %s has no primary channel", target)
			}
			if payload != "" {
				req.Payload = json.RawMessage(payload)
			}
			return ctlRun(cmd.Context(), f, timeout+ctlSendMargin, func(ctx context.Context, c *management.Client) error {
				r, err := c.Send(ctx, target, req)
				if err != nil {
					return ctlError(err, noChannel)
				}
				if f.output == "json" {
					err = printJSON(stdout, r)
				} else {
					err = printReply(stdout, r)
				}
				if err != nil {
					return err
				}
				if r.Status != "SUCCEEDED" {
					return &exitError{code: exitRemoteFailure, err: fmt.Errorf("the connector answered %s: %s", r.Status, orDash(deref(r.Error)))}
				}
				return nil
			})
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&target, "target", "", "target to send to")
	fl.StringVar(&typ, "type", "", "command type, such as ECHO")
	fl.StringVar(&payload, "payload", "", "command payload: JSON, @FILE to read it from a file, - from stdin")
	fl.BoolVar(&primary, "primary", false, "send to the target's primary channel only")
	fl.DurationVar(&timeout, "timeout", 30*time.Second, "how long to wait for the reply (at most the server's limit, 60s by default)")
	return cmd
}

func printReply(w io.Writer, r management.Reply) error {
	rows := [][]string{{"STATUS", r.Status}, {"COMMAND", r.CommandID}}
	if r.ChannelID != "" {
		rows = append(rows, []string{"CHANNEL", r.ChannelID}, []string{"CONNECTOR", orDash(r.ConnectorID)}, []string{"NODE", orDash(r.NodeID)})
	}
	if r.Code != nil {
		rows = append(rows, []string{"CODE", fmt.Sprint(*r.Code)})
	}
	if r.Error != nil {
		rows = append(rows, []string{"ERROR", *r.Error})
	}
	if len(r.Payload) > 0 {
		var b bytes.Buffer
		if err := json.Compact(&b, r.Payload); err != nil {
			b.Reset()
			b.Write(r.Payload)
		}
		rows = append(rows, []string{"PAYLOAD", b.String()})
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	writeRows(tw, rows)
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

func newCtlClusterCommand(f *ctlFlags, stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "cluster",
		Short: "Show this node's raft state, the leader and the members",
		Args:  ctlArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return ctlRun(cmd.Context(), f, ctlRequestTimeout, func(ctx context.Context, c *management.Client) error {
				cl, err := c.Cluster(ctx)
				if err != nil {
					return ctlError(err, "")
				}
				if f.output == "json" {
					return printJSON(stdout, cl)
				}
				fmt.Fprintf(stdout, "node %s (%s), leader %s\n", cell(cl.NodeID), cell(orDash(cl.State)), cell(orDash(cl.LeaderID)))
				if cl.Term > 0 {
					contact := ""
					if cl.LastContact != nil {
						contact = fmt.Sprintf(", last contact with the leader %s ago", time.Since(*cl.LastContact).Round(time.Millisecond))
					}
					fmt.Fprintf(stdout, "term %d, commit index %d, applied index %d%s\n", cl.Term, cl.CommitIndex, cl.AppliedIndex, contact)
				}
				fmt.Fprintln(stdout)
				rows := make([][]string, 0, len(cl.Members))
				for _, m := range cl.Members {
					leader := "no"
					if m.Leader {
						leader = "yes"
					}
					rows = append(rows, []string{m.NodeID, orDash(m.Address), m.State, orDash(m.Suffrage),
						orDash(m.RaftAddress), orDash(m.GRPCAddress), leader})
				}
				return table(stdout, "NODE\tGOSSIP\tSTATE\tSUFFRAGE\tRAFT\tGRPC\tLEADER", rows)
			})
		},
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func formatTime(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
