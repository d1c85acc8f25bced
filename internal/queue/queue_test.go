package queue_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/exchangekit/exchange/internal/queue"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder collects delivered values.
type recorder struct {
	mu  sync.Mutex
	got []int
}

func (r *recorder) add(v int) {
	r.mu.Lock()
	r.got = append(r.got, v)
	r.mu.Unlock()
}

func (r *recorder) values() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

func seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

func TestDeliversInOrder(t *testing.T) {
	defer goleak.VerifyNone(t)
	var r recorder
	d := queue.New(r.add, nil)
	d.Start()
	for i := range 1000 {
		d.Push(i)
	}
	d.Close()
	if got := r.values(); !slices.Equal(got, seq(1000)) {
		t.Fatalf("delivered %d values, out of order or missing: %v…", len(got), got[:min(len(got), 20)])
	}
}

func TestPushBeforeStartWaits(t *testing.T) {
	defer goleak.VerifyNone(t)
	var r recorder
	d := queue.New(r.add, nil)
	d.Push(1)
	d.Push(2)
	if got := r.values(); len(got) != 0 {
		t.Fatalf("delivered %v before Start", got)
	}
	d.Start()
	d.Start() // a second Start does nothing
	d.Push(3)
	d.Close()
	if got := r.values(); !slices.Equal(got, []int{1, 2, 3}) {
		t.Fatalf("delivered %v, want [1 2 3]", got)
	}
}

// TestPushNeverBlocks: a stuck consumer does not block producers, and Close
// delivers everything they queued once it is unstuck.
func TestPushNeverBlocksAndCloseDeliversTheRest(t *testing.T) {
	defer goleak.VerifyNone(t)
	var r recorder
	entered, release := make(chan struct{}), make(chan struct{})
	d := queue.New(func(v int) {
		if v == 0 {
			close(entered)
			<-release
		}
		r.add(v)
	}, nil)
	d.Start()
	d.Push(0)
	<-entered // the goroutine is stuck delivering 0
	for i := 1; i < 500; i++ {
		d.Push(i) // returns at once: nothing waits for the consumer
	}
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		d.Close()
	}()
	select {
	case <-closed:
		t.Fatal("Close returned while a value was being delivered")
	default:
	}
	close(release)
	<-closed
	if got := r.values(); !slices.Equal(got, seq(500)) {
		t.Fatalf("delivered %d values, want all 500 in order", len(got))
	}
}

func TestPushAfterCloseIsDropped(t *testing.T) {
	defer goleak.VerifyNone(t)
	var r recorder
	d := queue.New(r.add, nil)
	d.Start()
	d.Push(1)
	d.Close()
	d.Push(2)
	d.Close() // idempotent
	d.Start() // no restart after Close
	if got := r.values(); !slices.Equal(got, []int{1}) {
		t.Fatalf("delivered %v, want [1]", got)
	}
}

func TestCloseWithoutStartDropsAndDoesNotBlock(t *testing.T) {
	defer goleak.VerifyNone(t)
	var r recorder
	d := queue.New(r.add, nil)
	d.Push(1)
	d.Close()
	d.Start()
	d.Push(2)
	d.Close()
	if got := r.values(); len(got) != 0 {
		t.Fatalf("delivered %v, want nothing", got)
	}
}

func TestConcurrentCloses(t *testing.T) {
	defer goleak.VerifyNone(t)
	var r recorder
	d := queue.New(r.add, nil)
	d.Start()
	d.Push(7)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(d.Close)
	}
	wg.Wait()
	if got := r.values(); !slices.Equal(got, []int{7}) {
		t.Fatalf("delivered %v, want [7]", got)
	}
}

// TestConcurrentProducers: values from one producer keep their order, and
// none is lost, whatever the interleaving (run with -race).
func TestConcurrentProducers(t *testing.T) {
	defer goleak.VerifyNone(t)
	const producers, each = 8, 500
	var mu sync.Mutex
	got := map[int][]int{}
	d := queue.New(func(v [2]int) {
		mu.Lock()
		got[v[0]] = append(got[v[0]], v[1])
		mu.Unlock()
	}, nil)
	d.Start()
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for i := range each {
				d.Push([2]int{p, i})
			}
		})
	}
	wg.Wait()
	d.Close()
	for p := range producers {
		if !slices.Equal(got[p], seq(each)) {
			t.Errorf("producer %d: delivered %d values, want all %d in order", p, len(got[p]), each)
		}
	}
}

func TestPanicIsReportedAndDeliveryGoesOn(t *testing.T) {
	defer goleak.VerifyNone(t)
	var r recorder
	var panics []string
	d := queue.New(func(v int) {
		if v%2 == 1 {
			panic(fmt.Sprintf("odd %d", v))
		}
		r.add(v)
	}, func(v int, p any) {
		panics = append(panics, fmt.Sprintf("%d: %v", v, p)) // on the delivering goroutine only
	})
	d.Start()
	for i := range 5 {
		d.Push(i)
	}
	d.Close()
	if got := r.values(); !slices.Equal(got, []int{0, 2, 4}) {
		t.Errorf("delivered %v, want [0 2 4]", got)
	}
	if want := []string{"1: odd 1", "3: odd 3"}; !slices.Equal(panics, want) {
		t.Errorf("panics reported: %q, want %q", panics, want)
	}
}

func TestPanicWithoutHandlerIsRecovered(t *testing.T) {
	defer goleak.VerifyNone(t)
	var r recorder
	d := queue.New(func(v int) {
		if v == 0 {
			panic("boom") // logged by slog's default logger
		}
		r.add(v)
	}, nil)
	d.Start()
	d.Push(0)
	d.Push(1)
	d.Close()
	if got := r.values(); !slices.Equal(got, []int{1}) {
		t.Fatalf("delivered %v, want [1]", got)
	}
}

func TestNilDeliverIgnoresPushes(t *testing.T) {
	defer goleak.VerifyNone(t)
	d := queue.New[int](nil, nil)
	d.Start()
	d.Push(1)
	d.Close()
}

// An idle Dispatcher holds no goroutine: the one that delivers returns once
// the queue is empty, and the next value starts another.
func TestIdleHoldsNoGoroutine(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	got := make(chan int, 1)
	d := queue.New(func(v int) { got <- v }, nil)
	defer d.Close()
	d.Start()
	for v := range 3 {
		d.Push(v)
		select {
		case g := <-got:
			if g != v {
				t.Fatalf("delivered %d, want %d", g, v)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("value %d not delivered within 10 s", v)
		}
		// goleak retries for a while: the drain goroutine has that long to return.
		if err := goleak.Find(ignore); err != nil {
			t.Fatalf("after delivering value %d, the idle Dispatcher still holds a goroutine: %v", v, err)
		}
	}
}

// A value pushed from deliver itself (the drain goroutine) is delivered by
// that goroutine, after the values before it.
func TestPushFromDeliver(t *testing.T) {
	defer goleak.VerifyNone(t)
	var r recorder
	last := make(chan struct{})
	var d *queue.Dispatcher[int]
	d = queue.New(func(v int) {
		r.add(v)
		if v == 100 {
			close(last)
			return
		}
		d.Push(v + 1)
	}, nil)
	d.Start()
	d.Push(0)
	select {
	case <-last:
	case <-time.After(10 * time.Second):
		t.Errorf("value 100 not delivered within 10 s")
	}
	d.Close()
	if got := r.values(); !slices.Equal(got, seq(101)) {
		t.Fatalf("delivered %v, want 0…100 in order", got)
	}
}
