# Exchange — build, test and run. Everything the project needs is installed by
# these targets (Go modules through the module proxy; code generators pinned in
# scripts/genproto.sh). Generated code is committed, so build and test never
# need the generators.
GO        ?= go
BIN       ?= bin/exchange
PKGS      ?= ./...
GOFLAGS   ?=
TESTFLAGS ?= -race -count=1 -timeout 9m

.PHONY: all build test vet run demo proto verify-proto bench bench-compare fuzz cover tidy clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/exchange

vet:
	$(GO) vet $(PKGS)

## test: vet, then every test with the race detector (the CI gate).
test: vet
	$(GO) test $(TESTFLAGS) $(PKGS)

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

## bench: the library benchmarks (testing.B), allocations reported, and the
## cluster ones (internal/clusterbench: about a minute, mostly failovers).
bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 2s $(PKGS)

## bench-compare: Exchange against raw gRPC and NATS (separate module in bench/).
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
