package management

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// maxEventLine bounds one line of the event stream the client reads.
const maxEventLine = 1 << 20

// Events calls GET /exchange/events and calls fn with every event, in order,
// until ctx is done (it then returns ctx's error), the server ends the
// stream (io.EOF), or fn returns an error (returned as is). Comments
// (keepalives) are skipped. ready, if not nil, is called once the stream is
// open: events from then on are delivered.
func (c *Client) Events(ctx context.Context, ready func(), fn func(Event) error) error {
	req, err := c.newRequest(ctx, http.MethodGet, "/exchange/events", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.send(ctx, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return apiError(resp, data)
	}
	if ready != nil {
		ready()
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 4096), maxEventLine)
	var data bytes.Buffer
	for sc.Scan() {
		line := sc.Bytes()
		switch {
		case len(line) == 0: // end of an event
			if data.Len() == 0 {
				continue
			}
			var e Event
			if err := json.Unmarshal(data.Bytes(), &e); err != nil {
				return fmt.Errorf("management: GET /exchange/events: decode event: %w", err)
			}
			data.Reset()
			if err := fn(e); err != nil {
				return err
			}
		case line[0] == ':': // a comment: keepalive
		case bytes.HasPrefix(line, []byte("data:")):
			if data.Len() > 0 {
				data.WriteByte('\n')
			}
			data.Write(bytes.TrimPrefix(bytes.TrimPrefix(line, []byte("data:")), []byte(" ")))
		}
		// id:, event: and retry: lines say nothing the data does not.
	}
	if err := ctx.Err(); err != nil {
		return context.Cause(ctx)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, context.Canceled) && ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return fmt.Errorf("management: GET /exchange/events: read: %w", err)
	}
	return io.EOF
}
