# pgtandem — the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)
GO ?= go
BIN := bin/pgtandem
# The whole suite stays well under CI's 30 minutes on 2 cores; this bounds a hang.
TEST_TIMEOUT ?= 25m

.PHONY: all deps build test test-short lint demo bench clean image

all: build

## deps: install PostgreSQL majors (apt + npm), pgbouncer and Go modules; idempotent
deps:
	@scripts/install-deps.sh

## build: build bin/pgtandem
build:
	$(GO) build -o $(BIN) ./cmd/pgtandem

## image: the container image the Helm chart runs, as an OCI archive, without Docker (see internal/image)
image:
	$(GO) run ./internal/image/build -o bin/pgtandem-image.tar

## test: the whole suite, unit and integration, against real PostgreSQL servers
test: deps
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

## test-short: only the tests that need no server (decoders, planners, trackers, config); under 30 s
test-short:
	$(GO) test -short -count=1 ./...

## lint: gofmt and go vet
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.cache/*')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

## demo: a local upgrade rehearsal from PostgreSQL 15 to 17 (see README)
demo: deps build
	./$(BIN) demo

## bench: benchmarks that print figures against native PostgreSQL tools, and the broker's throughput
bench: deps
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 60m ./bench/...
	$(GO) test -run '^$$' -bench 'ProduceConsume|ClientCPU' -benchtime 500000x ./devbroker

clean:
	rm -rf bin .cache/demo
