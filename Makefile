# jfs — build and test entry points. `make test` is what CI runs.
GO ?= go
PKGS := ./...
# Packages with concurrency run under the race detector; the rest (the
# integration tests among them) run once without it.
RACE_PKGS := ./rangelock/... ./fsm/... ./cluster/... ./client/... ./fuse/... ./bench/...
OTHER_PKGS = $(shell $(GO) list ./... | grep -v -E '^github.com/jfs-dev/jfs/(rangelock|fsm|cluster|client|fuse|bench)(/|$$)')

# make install puts the programs in $(DESTDIR)$(BINDIR) and links mount(8)'s
# helper, $(SBINDIR)/mount.jfs, to jfs, so that mount -t jfs and fstab work.
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
SBINDIR ?= /sbin

.PHONY: build test check vet fmt bench proto install uninstall

build:
	$(GO) build -o bin/ ./cmd/...

install: build
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SBINDIR)
	install -m 0755 bin/jfsd bin/jfs bin/jfsctl $(DESTDIR)$(BINDIR)/
	ln -sfn $(BINDIR)/jfs $(DESTDIR)$(SBINDIR)/mount.jfs

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/jfsd $(DESTDIR)$(BINDIR)/jfs $(DESTDIR)$(BINDIR)/jfsctl $(DESTDIR)$(SBINDIR)/mount.jfs

# The whole suite: formatting, vet, the unit tests of the packages with
# concurrency under the race detector, then every other package (integration
# tests start real jfsd processes and real FUSE mounts). A package runs once:
# running the race-checked ones again without the detector, beside the
# integration tests, took CPU from them on a 2-core machine.
test: check
	$(GO) test -race -count=1 $(RACE_PKGS)
	$(GO) test -count=1 -timeout 14m $(OTHER_PKGS)

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
