package grpcchannel_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/grpcchannel"
	"github.com/exchangekit/exchange/command"
	pb "github.com/exchangekit/exchange/internal/exchangepb"
)

// The memory an idle channel costs its server (the controller's side), next
// to a raw gRPC server holding as many idle bidi streams, each with a
// handler goroutine blocked in Recv. The clients run in a child process (this
// test binary, started again with idleClientsEnv set), so that the figures
// are the server's alone.
//
//	go test -run '^$' -bench IdleChannels -benchtime 1x ./channel/grpcchannel/
//
// EXCHANGE_IDLE_N sets the number of channels (default 1000). Reported per
// channel: B/channel (HeapInuse+StackInuse after GC, less the same before the
// clients came), goroutines/channel, and, for the Exchange server, ratio:
// raw B/channel over ours (higher is better; ≥ 1 meets the target).

// idleClientsEnv, when set in the environment of the test binary, makes it
// a client process: "kind addr n perConn" (see runIdleClients).
const idleClientsEnv = "GRPCCHANNEL_IDLE_CLIENTS"

func init() {
	if spec := os.Getenv(idleClientsEnv); spec != "" {
		os.Exit(runIdleClients(spec))
	}
}

// runIdleClients opens n streams to addr, perConn of them per connection,
// prints "ready", and holds them until its stdin closes. kind "exchange"
// opens channels as a connector does (Dial, HELLO, channel.New); kind "raw"
// opens bare Connect streams and sends one empty frame on each.
func runIdleClients(spec string) int {
	var (
		kind, addr  string
		n, perConn  int
		ctx, cancel = context.WithTimeout(context.Background(), 5*time.Minute)
	)
	defer cancel()
	if _, err := fmt.Sscan(spec, &kind, &addr, &n, &perConn); err != nil {
		fmt.Fprintln(os.Stderr, "bad spec:", err)
		return 2
	}
	var (
		mu      sync.Mutex
		closers []func()
		failed  atomic.Value
	)
	conns := (n + perConn - 1) / perConn
	work := make(chan int)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := range work {
				streams := min(perConn, n-i*perConn)
				if err := openIdle(ctx, kind, addr, streams, &mu, &closers); err != nil {
					failed.Store(err)
				}
			}
		})
	}
	for i := range conns {
		work <- i
	}
	close(work)
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		fmt.Fprintln(os.Stderr, "clients:", err)
		return 1
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, c := range closers {
		c()
	}
	return 0
}

// openIdle opens one connection to addr with streams streams on it.
func openIdle(ctx context.Context, kind, addr string, streams int, mu *sync.Mutex, closers *[]func()) error {
	keep := func(f func()) {
		mu.Lock()
		*closers = append(*closers, f)
		mu.Unlock()
	}
	switch kind {
	case "exchange":
		d, err := grpcchannel.NewDialer(addr, grpcchannel.WithInsecure())
		if err != nil {
			return err
		}
		keep(func() { _ = d.Close() })
		for range streams {
			conn, err := d.Dial(ctx)
			if err != nil {
				return err
			}
			if _, err := channel.Hello(ctx, conn, command.HelloPayload{TargetID: "idle", ProtocolVersion: command.ProtocolVersion}); err != nil {
				return err
			}
			ch := channel.New(conn, nil, channel.Config{})
			keep(func() { _ = ch.Close() })
		}
	case "raw":
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		keep(func() { _ = cc.Close() })
		for range streams {
			sctx, cancel := context.WithCancel(ctx)
			st, err := pb.NewExchangeClient(cc).Connect(sctx)
			if err != nil {
				cancel()
				return err
			}
			keep(cancel)
			if err := st.Send(&pb.Frame{}); err != nil {
				return err
			}
			if _, err := st.Header(); err != nil { // the server has the stream
				return err
			}
		}
	default:
		return fmt.Errorf("unknown kind %q", kind)
	}
	return nil
}

// rawServer is the baseline: a plain gRPC server whose Connect handler
// reads until the stream ends.
type rawServer struct {
	pb.UnimplementedExchangeServer
	held *counter
}

func (s *rawServer) Connect(st pb.Exchange_ConnectServer) error {
	if err := st.SendHeader(nil); err != nil {
		return err
	}
	s.held.add()
	for {
		if _, err := st.Recv(); err != nil {
			return nil
		}
	}
}

// counter closes reached when it has been added to n times.
type counter struct {
	n       int64
	v       atomic.Int64
	reached chan struct{}
}

func newCounter(n int) *counter { return &counter{n: int64(n), reached: make(chan struct{})} }

func (c *counter) add() {
	if c.v.Add(1) == c.n {
		close(c.reached)
	}
}

// serverMem is what the benchmark reads of the server process.
type serverMem struct {
	bytes      uint64 // HeapInuse + StackInuse
	stack      uint64 // StackInuse
	goroutines int
}

func readServerMem() serverMem {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return serverMem{bytes: ms.HeapInuse + ms.StackInuse, stack: ms.StackInuse, goroutines: runtime.NumGoroutine()}
}

// idleN is the number of channels of BenchmarkIdleChannels.
func idleN(b *testing.B) int {
	n := 1000
	if s := os.Getenv("EXCHANGE_IDLE_N"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v <= 0 {
			b.Fatalf("EXCHANGE_IDLE_N=%q: want a positive number", s)
		}
		n = v
	}
	return n
}

// BenchmarkIdleChannels reports the server's memory and goroutines per idle
// channel: one connection per channel ("conn"), and 16 streams per
// connection ("shared", the default MaxConcurrentStreams), for the Exchange
// server (AcceptHello then channel.New, as a controller) and a raw gRPC
// server side by side. Each iteration opens and closes all N; run it with
// -benchtime 1x.
func BenchmarkIdleChannels(b *testing.B) {
	n := idleN(b)
	for _, layout := range []struct {
		name    string
		perConn int
	}{{"conn", 1}, {"shared", 16}} {
		b.Run(layout.name, func(b *testing.B) {
			var raw, ours float64
			for b.Loop() {
				raw = measureIdle(b, "raw", n, layout.perConn)
				ours = measureIdle(b, "exchange", n, layout.perConn)
			}
			b.ReportMetric(ours, "B/channel")
			b.ReportMetric(raw, "raw-B/channel")
			b.ReportMetric(raw/ours, "ratio")
		})
	}
}

// measureIdle serves kind, opens n idle streams from a client process and
// returns the server's bytes per stream; it reports goroutines per stream.
func measureIdle(b *testing.B, kind string, n, perConn int) float64 {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	if os.Getenv("EXCHANGE_IDLE_PROFILE") != "" {
		runtime.MemProfileRate = 64
	}
	before := readServerMem()

	var (
		held     = newCounter(n)
		stop     func()
		closeAll func()
	)
	switch kind {
	case "raw":
		rs := &rawServer{held: held}
		gs := grpc.NewServer()
		pb.RegisterExchangeServer(gs, rs)
		served := make(chan struct{})
		go func() { defer close(served); _ = gs.Serve(lis) }()
		closeAll = func() {}
		stop = func() { gs.Stop(); <-served }
	default:
		srv := grpcchannel.NewServer(grpcchannel.WithLimits(grpcchannel.ServerLimits{
			MaxConnections: 4 * n, MaxConnectionsPerSource: 4 * n, MaxHandshakes: 4 * n, MaxHandshakesPerSource: 4 * n,
		}))
		served := make(chan struct{})
		go func() { defer close(served); _ = srv.Serve(lis) }()
		var (
			mu    sync.Mutex
			chans []*channel.Channel
			wg    sync.WaitGroup
		)
		decide := func(_ context.Context, cmd *command.Command, h command.HelloPayload) (*command.Reply, error) {
			return command.Succeeded(cmd, command.HelloReplyPayload{TargetID: h.TargetID, ChannelID: command.NewID(),
				ProtocolVersion: command.ProtocolVersion})
		}
		wg.Go(func() {
			for {
				conn, err := srv.Accept(ctx)
				if err != nil {
					return
				}
				wg.Go(func() {
					if _, _, err := channel.AcceptHello(ctx, conn, decide); err != nil {
						_ = conn.Close()
						return
					}
					ch := channel.New(conn, nil, channel.Config{})
					mu.Lock()
					chans = append(chans, ch)
					mu.Unlock()
					held.add()
				})
			}
		})
		closeAll = func() {
			mu.Lock()
			defer mu.Unlock()
			for _, ch := range chans {
				_ = ch.Close()
			}
		}
		stop = func() { _ = srv.Close(); srv.Stop(); <-served; wg.Wait() }
	}

	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %d %d", idleClientsEnv, kind, lis.Addr(), n, perConn))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		stop()
		b.Fatalf("%s clients: %q, %v", kind, line, err)
	}
	select { // the clients are all up; the server catches up
	case <-held.reached:
	case <-ctx.Done():
		b.Fatalf("%s: %d of %d streams held: %v", kind, held.v.Load(), n, ctx.Err())
	}
	b.StopTimer()
	after := readServerMem()
	if dir := os.Getenv("EXCHANGE_IDLE_PROFILE"); dir != "" { // heap and goroutine profiles of the held streams
		for _, p := range []string{"heap", "goroutine"} {
			f, err := os.Create(fmt.Sprintf("%s/%s-%s-%d.pprof", dir, p, kind, perConn))
			if err != nil {
				b.Fatal(err)
			}
			_ = pprof.Lookup(p).WriteTo(f, 0)
			_ = f.Close()
		}
	}
	b.StartTimer()

	_ = stdin.Close()
	if err := cmd.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		b.Logf("%s clients: %v", kind, err)
	}
	closeAll()
	stop()

	perStream := float64(int64(after.bytes)-int64(before.bytes)) / float64(n)
	b.ReportMetric(float64(after.goroutines-before.goroutines)/float64(n), kind+"-goroutines/channel")
	b.ReportMetric(float64(int64(after.stack)-int64(before.stack))/float64(n), kind+"-stack-B/channel")
	return perStream
}
