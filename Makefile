# The two commands of the README: `make run` and `make test`. Both install
# what the host lacks first (scripts/install-deps.sh, idempotent).
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)
export GOFLAGS ?= -buildvcs=false

BIN := bin/codeexec

.PHONY: all deps build run test vet fmt-check unit

all: build

deps:
	@bash scripts/install-deps.sh

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

# The whole suite: static checks, then every test (sandbox, API, languages,
# the real LibreChat client end to end) with the race detector.
test: build vet fmt-check
	go test -race -count=1 -timeout 60m ./...
