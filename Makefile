# The two commands of the README: `make run` and `make test`. Both install
# what the host lacks first (scripts/install-deps.sh, idempotent).
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)
export GOFLAGS ?= -buildvcs=false

BIN := bin/codeexec

.PHONY: all deps test-deps build run test vet fmt-check unit

all: build

deps:
	@bash scripts/install-deps.sh

# What only the test suite needs besides (scripts/packages-test.txt).
test-deps:
	@CODEEXEC_DEPS_TEST=1 bash scripts/install-deps.sh

build: deps
	go build -o $(BIN) ./cmd/codeexec

# Serve on the embedded defaults (local disk storage, native sandbox).
run: build
	@bash scripts/run.sh $(BIN)

vet:
	go vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files -co --exclude-standard '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# The whole suite: static checks, then every test (sandbox, attack suite,
# languages, storage servers, the real LibreChat client end to end, the
# container image) with the race detector. One package at a time: several
# tests measure time limits, and a 2-core machine shared by parallel packages
# would blur them. The API tests run on every backend they declare (cold,
# warm, gVisor: onBackends in internal/api/main_test.go). skipcheck prints what plain go test would, and with
# CI=true fails on any skip not listed in test/skips.txt.
test: test-deps build vet fmt-check
	set -o pipefail; go test -json -race -count=1 -p 1 -timeout 80m ./... | go run ./internal/testenv/skipcheck

# The fast tests alone: the engine, both APIs and the stateful runtime over
# the fake sandbox (internal/sandbox/sandboxtest) and the in-memory store,
# and the packages that need no sandbox at all. No root, no toolchains
# beyond Go and python3, seconds. `make test` runs these too.
UNIT_PKGS := ./internal/engine/ ./internal/api/ ./internal/runtime/ ./internal/storage/ ./internal/ptc/ ./internal/sandbox/ ./internal/sandbox/warm/
# (lang's table tests only: TestLanguagesOnHost runs every toolchain.)
PURE_PKGS := ./internal/auth/ ./internal/admission/ ./internal/testenv/ ./internal/owner/
unit:
	go test -count=1 -run '^TestUnit' $(UNIT_PKGS)
	go test -count=1 -run '^Test(TableOrderAndLookup|JavaNames|PythonImportsBeyondStdlib|EtcUnion)$$' ./internal/lang/
	go test -count=1 $(PURE_PKGS)

# The performance benchmark (bench/main.go): codeexec against bare process
# starts, side by side on this machine; writes bench/results.json.
.PHONY: bench
bench: build
	go run ./bench -server $(BIN) -out bench/results.json
