package membership_test

import (
	"context"
	"fmt"
	"time"

	"github.com/exchangekit/exchange/cluster/membership"
)

// Two nodes on loopback: the second joins the first, and each sees the
// other's raft address in its metadata.
func ExampleStart() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	start := func(id, raftAddr string, join ...string) *membership.Membership {
		cfg := membership.DefaultConfig()
		cfg.NodeID = id
		cfg.BindAddr = "127.0.0.1:0" // tests: any free port
		cfg.Meta = membership.Meta{RaftAddr: raftAddr, GRPCAddr: "127.0.0.1:7400", Incarnation: "run-1", Version: 1}
		cfg.Join = join
		m, err := membership.Start(ctx, cfg)
		if err != nil {
			panic(err)
		}
		return m
	}
	a := start("node-a", "127.0.0.1:7401")
	defer a.Close()
	b := start("node-b", "127.0.0.1:7411", a.LocalNode().Addr)
	defer b.Close()

	// Wait until node-a has seen node-b join.
	for ev := range a.Events() {
		if ev.Type == membership.EventJoin && ev.Member.Meta.NodeID == "node-b" {
			break
		}
	}
	for _, m := range a.Members() {
		fmt.Println(m.Meta.NodeID, m.Meta.RaftAddr, m.State)
	}
	// Output:
	// node-a 127.0.0.1:7401 alive
	// node-b 127.0.0.1:7411 alive
}
