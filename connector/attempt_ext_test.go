package connector_test

import "testing"

// Every HELLO of one Connector carries the same instance id and a growing
// attempt number; another Connector with the same connector id has another
// instance (decision 0018: a stale attempt never takes over a later one).
func TestHelloCarriesInstanceAndAttempt(t *testing.T) {
	ctx := testContext(t)
	fc := newFakeController(t)
	cfg := testConfig(t)
	cfg.ConnectorID = "gw"
	c := newConnector(t, cfg, nil, fc.dialer())
	start(t, c)
	p1 := fc.next(ctx)
	_ = p1.ch.Close()
	p2 := fc.next(ctx)
	if p1.hello.Instance == "" || p1.hello.Instance != p2.hello.Instance {
		t.Errorf("instances = %q, %q; want one non-empty instance", p1.hello.Instance, p2.hello.Instance)
	}
	if p1.hello.Attempt == 0 || p2.hello.Attempt <= p1.hello.Attempt {
		t.Errorf("attempts = %d, %d; want growing, from 1", p1.hello.Attempt, p2.hello.Attempt)
	}

	other := newConnector(t, cfg, nil, fc.dialer())
	start(t, other)
	p3 := fc.next(ctx)
	if p3.hello.Instance == "" || p3.hello.Instance == p1.hello.Instance {
		t.Errorf("another Connector's instance = %q; want one of its own (first was %q)", p3.hello.Instance, p1.hello.Instance)
	}
}
