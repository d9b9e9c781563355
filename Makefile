# jfs — build and test entry points. `make test` is what CI runs.
GO ?= go
PKGS := ./...
# Packages with concurrency run under the race detector.
RACE_PKGS := ./rangelock/... ./fsm/... ./cluster/... ./client/... ./fuse/... ./bench/...

.PHONY: build test check vet fmt bench proto

build:
	$(GO) build -o bin/ ./cmd/...

# The whole suite: formatting, vet, race-checked unit tests, then everything
# (integration tests start real jfsd processes and real FUSE mounts).
test: check
	$(GO) test -race -count=1 $(RACE_PKGS)
	$(GO) test -count=1 -timeout 14m $(PKGS)

check: fmt vet

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

bench:
	$(GO) test -run XXX -bench . -benchmem ./rangelock/... ./fsm/...

proto:
	$(GO) generate ./api/...
