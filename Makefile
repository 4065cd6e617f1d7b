# skiff — build and test.
#   make build   the one binary, bin/skiff
#   make test    installs what the tests need (apt-get, when missing), then
#                vet, unit, privileged and integration tests, short fuzz runs
#                and a leak check. Run as root: the sandboxes are real.

GO       ?= go
GOFLAGS  ?=
FUZZTIME ?= 10s
PKGS     := ./...

.PHONY: build test deps vet unit fuzz leakcheck clean k8s-tools

build:
	$(GO) build $(GOFLAGS) -o bin/skiff ./cmd/skiff

deps:
	@scripts/deps.sh

vet:
	$(GO) vet $(PKGS)

# Real Kubernetes binaries (apiserver, controller-manager, scheduler,
# kubectl) for tests/kube, built once from tools/k8s and cached by version.
k8s-tools:
	@scripts/k8s-tools.sh >/dev/null

# scripts/eci-js.sh installs the official JavaScript ECI SDK (npm) that one
# ECI test drives; it prints nothing, and that test skips, without npm.
unit: build k8s-tools
	SKIFF_ECI_JS_MODULES=$$(scripts/eci-js.sh) SKIFF_BIN=$(CURDIR)/bin/skiff $(GO) test $(GOFLAGS) -count=1 -timeout 30m $(PKGS)

fuzz:
	$(GO) test -run='^$$' -fuzz='^FuzzDecodeCreateRequest$$' -fuzztime=$(FUZZTIME) ./internal/server
	$(GO) test -run='^$$' -fuzz='^FuzzParseQuantity$$' -fuzztime=$(FUZZTIME) ./api
	@scripts/fuzz-more.sh $(FUZZTIME)

leakcheck:
	@scripts/leakcheck.sh

test: deps vet k8s-tools unit fuzz leakcheck

clean:
	rm -rf bin
