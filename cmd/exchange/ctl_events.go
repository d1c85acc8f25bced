package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/exchangekit/exchange/management"
)

// eventsHeader is the table's header, printed once the stream is open.
const eventsHeader = "TIME          KIND                  TARGET            DETAILS"

func newCtlEventsCommand(f *ctlFlags, stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "events",
		Short: "Follow the live events of the cluster until Ctrl-C",
		Long: `Follow the live events of the cluster (GET /exchange/events): channels
registered and unregistered, primaries elected (with the connector and the
epoch) and evicted, batch transitions, nodes joining and leaving, leader
changes. One line per event, printed as it comes (-o json: one JSON object per
line). A "dropped" event says how many events this client missed because it
fell behind. Stops with exit code 0 on Ctrl-C or when the controller ends the
stream (it shuts down).`,
		Args: ctlArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return ctlRun(cmd.Context(), f, 0, func(ctx context.Context, c *management.Client) error {
				enc := json.NewEncoder(stdout)
				enc.SetEscapeHTML(false)
				ready := func() {
					fmt.Fprintf(cmd.ErrOrStderr(), "following the events of %s (Ctrl-C to stop)\n", c.Addr())
					if f.output == "table" {
						fmt.Fprintln(stdout, eventsHeader)
					}
				}
				err := c.Events(ctx, ready, func(e management.Event) error {
					if f.output == "json" {
						if err := enc.Encode(e); err != nil {
							return fmt.Errorf("write output: %w", err)
						}
						return nil
					}
					if _, err := fmt.Fprintln(stdout, eventLine(e)); err != nil {
						return fmt.Errorf("write output: %w", err)
					}
					return nil
				})
				switch {
				case errors.Is(err, io.EOF), errors.Is(ctx.Err(), context.Canceled):
					return nil // the controller ended the stream, or Ctrl-C
				case err != nil:
					return ctlError(err, "")
				}
				return nil
			})
		},
	}
}

// eventLine is one row of the events table.
func eventLine(e management.Event) string {
	var d []string
	add := func(k, v string) {
		if v != "" {
			d = append(d, k+"="+cell(v))
		}
	}
	add("channel", e.ChannelID)
	add("connector", e.ConnectorID)
	add("node", e.NodeID)
	if e.Epoch > 0 {
		add("epoch", strconv.FormatUint(e.Epoch, 10))
	}
	add("batch", e.BatchID)
	add("status", e.Status)
	add("replaced-by", e.ReplacedBy)
	if e.Dropped > 0 {
		add("dropped", strconv.FormatUint(e.Dropped, 10))
	}
	target := e.TargetID
	if target == "" {
		target = "-"
	}
	return fmt.Sprintf("%-13s %-21s %-17s %s", e.Time.Local().Format("15:04:05.000"), cell(e.Kind), cell(target),
		strings.Join(d, " "))
}
