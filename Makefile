# Exchange — build, test and run. Everything the project needs is installed by
# these targets (Go modules through the module proxy; code generators pinned in
# scripts/genproto.sh). Generated code is committed, so build and test never
# need the generators.
GO        ?= go
BIN       ?= bin/exchange
PKGS      ?= ./...
GOFLAGS   ?=
TESTFLAGS ?= -race -count=1 -timeout 9m
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: all build test vet lint deps screenshot run demo proto verify-proto bench bench-quick bench-lib bench-compare fuzz cover tidy clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/exchange

vet:
	$(GO) vet $(PKGS)

## lint: staticcheck (pinned; go run fetches it through the module proxy and
## builds it once per machine, go.mod is untouched) over both modules.
lint:
	$(GO) run $(STATICCHECK) $(PKGS)
	cd bench && $(GO) run $(STATICCHECK) ./...

## test: vet and lint, then every test with the race detector (the CI
## gate), then the bench/ module's own tests (each runner once at a tiny size, so that
## make bench and make bench-scale cannot rot).
test: vet lint deps
	$(GO) test $(TESTFLAGS) $(PKGS)
	cd bench && $(GO) vet ./... && $(GO) test -count=1 -timeout 5m ./...

## deps: what the tests need besides Go modules: Chromium, for the
## dashboard's browser test (Debian's package; nothing when already there).
deps:
	./scripts/install-chromium.sh

## screenshot: docs/dashboard.png, taken by the dashboard's browser test.
screenshot: deps
	$(GO) test -count=1 -timeout 5m -run '^TestDashboard$$' ./cmd/exchange -args -screenshot $(CURDIR)/docs/dashboard.png

## run: a single-node controller on the defaults (data in ./exchange-data).
run: build
	./$(BIN) controller

## demo: one process, embedded controller and connectors, narrated.
demo: build
	./$(BIN) demo

## proto: regenerate internal/exchangepb from proto/exchange/v1 with pinned tools.
proto:
	./scripts/genproto.sh

verify-proto: proto
	git diff --exit-code -- internal/exchangepb

## bench: every side-by-side comparison of bench/ (Exchange against raw gRPC,
## NATS, raw Go channels, local Send, raw Send, a raw gRPC server's memory),
## the median of interleaved rounds, merged into bench/results/latest.json and
## printed as markdown (docs/benchmarks.md). 6 to 10 minutes on 2 cores.
## bench-quick: the same figures, same names, in under 3 minutes.
BENCH_OUT ?= results/latest.json
bench:
	cd bench && EXCHANGE_BENCH_OUT=$(BENCH_OUT) EXCHANGE_BENCH_ROUNDS=5 EXCHANGE_BENCH_TIME=3s EXCHANGE_BENCH_IDLE=2000 \
		$(GO) test -run '^TestCompare$$' -count=1 -v -timeout 40m .

bench-quick:
	cd bench && EXCHANGE_BENCH_OUT=$(BENCH_OUT) EXCHANGE_BENCH_ROUNDS=3 EXCHANGE_BENCH_TIME=700ms EXCHANGE_BENCH_IDLE=2000 \
		$(GO) test -run '^TestCompare$$' -count=1 -v -timeout 10m .

## bench-lib: the library benchmarks (testing.B), allocations reported, and the
## cluster ones (internal/clusterbench: about a minute, mostly failovers).
bench-lib:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 2s $(PKGS)

## bench-compare: the testing.B form of the comparisons in bench/ (B/op,
## allocs/op; each contender on its own, not interleaved).
bench-compare:
	cd bench && $(GO) test -run '^$$' -bench . -benchmem -benchtime 2s ./...

## bench-scale: one controller process (the exchange binary) and N real gRPC
## connectors from several client processes (bench/scale, a few minutes per
## size); merges its figures into bench/results/latest.json. SCALE_SIZES have a
## connection each (at most ~19,900 under a 20,000 fd limit), SCALE_SHARED share
## a few connections per client process; SCALE_FLAGS adds tool flags
## (-profiles DIR, -controller-flags '...', see go run ./scale -h).
.PHONY: bench-scale
SCALE_SIZES  ?= 10000,19000
SCALE_SHARED ?= 100000
SCALE_FLAGS  ?=
bench-scale:
	cd bench && $(GO) run ./scale -sizes '$(SCALE_SIZES)' -shared-sizes '$(SCALE_SHARED)' $(SCALE_FLAGS)

## fuzz: every fuzz target for a short while.
FUZZTIME ?= 20s
fuzz:
	./scripts/fuzz.sh $(FUZZTIME)

cover:
	$(GO) test -count=1 -coverprofile=cover.out $(PKGS) && $(GO) tool cover -func=cover.out | tail -1

tidy:
	$(GO) mod tidy && git diff --exit-code go.mod go.sum

clean:
	rm -rf bin cover.out
