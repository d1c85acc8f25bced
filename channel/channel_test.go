package channel

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/exchangekit/exchange/command"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestClassify(t *testing.T) {
	t.Parallel()
	cmd := &command.Command{ID: "c1", Type: "ECHO"}
	for _, tc := range []struct {
		name  string
		reply *command.Reply
		check func(t *testing.T, r *command.Reply, err error)
	}{
		{"succeeded", &command.Reply{CommandID: "c1", Type: "ECHO", Status: command.StatusSucceeded},
			func(t *testing.T, r *command.Reply, err error) {
				if err != nil || r == nil || r.Status != command.StatusSucceeded {
					t.Errorf("= (%+v, %v), want the reply", r, err)
				}
			}},
		{"error status is a reply", &command.Reply{CommandID: "c1", Type: "ECHO", Status: command.StatusError, Error: "no", Code: 409},
			func(t *testing.T, r *command.Reply, err error) {
				if err != nil || r == nil || r.Error != "no" {
					t.Errorf("= (%+v, %v), want the ERROR reply and no error", r, err)
				}
			}},
		{"unknown", &command.Reply{CommandID: "c1", Type: command.TypeUnknown, Status: command.StatusError, Error: "no handler", Code: 404},
			func(t *testing.T, r *command.Reply, err error) {
				var ue *UnknownCommandError
				if !errors.As(err, &ue) || !errors.Is(err, ErrUnknownCommand) || r != nil {
					t.Fatalf("= (%+v, %v), want a *UnknownCommandError", r, err)
				}
				if diff := cmp.Diff(&UnknownCommandError{CommandID: "c1", Type: "ECHO", Message: "no handler"}, ue); diff != "" {
					t.Errorf("error differs (-want +got):\n%s", diff)
				}
			}},
		{"no reply", &command.Reply{CommandID: "c1", Type: command.TypeNoReply, Status: command.StatusError, Error: "boom", Code: 500},
			func(t *testing.T, r *command.Reply, err error) {
				var re *RemoteError
				if !errors.As(err, &re) || r != nil {
					t.Fatalf("= (%+v, %v), want a *RemoteError", r, err)
				}
				if re.CommandID != "c1" || re.Type != "ECHO" || re.Message != "boom" || re.Reply == nil {
					t.Errorf("RemoteError = %+v, want id c1, type ECHO, message boom and the reply", re)
				}
			}},
		{"busy", &command.Reply{CommandID: "c1", Type: "ECHO", Status: command.StatusError, Code: 429, RetryAfter: time.Second},
			func(t *testing.T, r *command.Reply, err error) {
				var be *BusyError
				if !errors.As(err, &be) || !errors.Is(err, ErrBusy) || r != nil {
					t.Fatalf("= (%+v, %v), want a *BusyError", r, err)
				}
				if *be != (BusyError{RetryAfter: time.Second, Remote: true}) {
					t.Errorf("BusyError = %+v, want remote, retry after 1s", be)
				}
			}},
		{"429 without retry-after is a reply", &command.Reply{CommandID: "c1", Type: "ECHO", Status: command.StatusError, Code: 429},
			func(t *testing.T, r *command.Reply, err error) {
				if err != nil || r == nil {
					t.Errorf("= (%+v, %v), want the reply", r, err)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, err := classify(cmd, tc.reply)
			tc.check(t, r, err)
		})
	}
}

func TestRun(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancelCause(t.Context())
	defer cancel(nil)
	newCh := func(h command.Handler) *Channel {
		return &Channel{ctx: ctx, h: h, cfg: Config{}.withDefaults()}
	}
	cmd := &command.Command{ID: "c1", Type: "ECHO"}
	complete := &command.Reply{CommandID: "c1", Type: "ECHO", Status: command.StatusSucceeded}
	incomplete := &command.Reply{Payload: []byte("p"), Error: "went wrong"}
	for _, tc := range []struct {
		name string
		h    command.Handler
		want *command.Reply
	}{
		{"nil handler", nil,
			&command.Reply{CommandID: "c1", Type: command.TypeUnknown, Status: command.StatusError, Error: `no handler for command type "ECHO"`, Code: 404}},
		{"unknown type", command.NewMux(),
			&command.Reply{CommandID: "c1", Type: command.TypeUnknown, Status: command.StatusError, Error: `no handler for command type "ECHO"`, Code: 404}},
		{"error", command.HandlerFunc(func(context.Context, *command.Command) (*command.Reply, error) { return nil, errors.New("failed") }),
			&command.Reply{CommandID: "c1", Type: command.TypeNoReply, Status: command.StatusError, Error: "failed", Code: 500}},
		{"panic", command.HandlerFunc(func(context.Context, *command.Command) (*command.Reply, error) { panic("boom") }),
			&command.Reply{CommandID: "c1", Type: command.TypeNoReply, Status: command.StatusError, Error: "handler for ECHO panicked: boom", Code: 500}},
		{"nil reply", command.HandlerFunc(func(context.Context, *command.Command) (*command.Reply, error) { return nil, nil }),
			&command.Reply{CommandID: "c1", Type: "ECHO", Status: command.StatusSucceeded}},
		{"complete reply", command.HandlerFunc(func(context.Context, *command.Command) (*command.Reply, error) { return complete, nil }),
			complete},
		{"incomplete reply", command.HandlerFunc(func(context.Context, *command.Command) (*command.Reply, error) { return incomplete, nil }),
			&command.Reply{CommandID: "c1", Type: "ECHO", Status: command.StatusError, Payload: []byte("p"), Error: "went wrong"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := newCh(tc.h).run(cmd)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("run() differs (-want +got):\n%s", diff)
			}
		})
	}
	if incomplete.CommandID != "" || incomplete.Status != command.StatusUnspecified {
		t.Errorf("run() modified the handler's reply: %+v", incomplete)
	}
}

// A handler that fails because the sender's deadline passed sends nothing:
// the sender has stopped waiting.
func TestRunTimedOutHandlerSendsNoReply(t *testing.T) {
	t.Parallel()
	c := &Channel{ctx: t.Context(), cfg: Config{}.withDefaults(),
		h: command.HandlerFunc(func(ctx context.Context, _ *command.Command) (*command.Reply, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		})}
	if r := c.run(&command.Command{ID: "c1", Type: "SLOW", Timeout: time.Millisecond}); r != nil {
		t.Errorf("run() of a handler that hit the sender's deadline = %+v, want nil (no reply)", r)
	}
}

func TestErrorMessages(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&RemoteError{CommandID: "c1", Type: "ECHO", Message: "boom"}, "channel: remote handler for ECHO[c1] failed: boom"},
		{&UnknownCommandError{CommandID: "c1", Type: "X", Message: "no handler"}, `channel: peer has no handler for command type "X"`},
		{&BusyError{RetryAfter: time.Second, Remote: true}, "channel: busy (peer's handler limit reached), retry after 1s"},
		{&BusyError{RetryAfter: time.Second}, "channel: busy (local in-flight limit reached), retry after 1s"},
		{&HelloRejectedError{Reason: "bad token"}, "channel: hello rejected: bad token"},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
	if !errors.Is(&HelloRejectedError{}, ErrHelloRejected) {
		t.Error("HelloRejectedError does not wrap ErrHelloRejected")
	}
}
