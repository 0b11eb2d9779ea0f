# docdb-dr — the two commands that matter first: `make demo` and `make test`.

GO       ?= go
GOFLAGS  ?=
PKGS     := ./...
# Lambda binaries: provided.al2023 on arm64 runs a static executable named bootstrap.
LAMBDA_ENV   := GOOS=linux GOARCH=arm64 CGO_ENABLED=0
LAMBDA_FLAGS := -trimpath -ldflags='-s -w' -tags lambda.norpc
BUILD_DIR    := build

# Pinned tool versions, run with `go run pkg@version` so that they never enter the product's
# module graph (a tool dependency in go.mod would raise golang.org/x/sync and x/sys for the
# Lambda binaries too). staticcheck v0.8.2 (2026.2.2) is the newest the module proxy serves and
# needs Go >= 1.26; govulncheck's version is pinned in reliability/govulncheck.sh.
STATICCHECK_VERSION := v0.8.2
STATICCHECK         := $(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
# How much `make fuzz` runs each fuzz target (go test -fuzztime syntax: 100000x, 10s, 1m). The
# default is a count, not a duration: Go 1.26's fuzz coordinator can report a spurious
# "context deadline exceeded" failure when a duration expires while a starved worker is mid-call
# (golang/go#75804, fixed in Go 1.27; seen in CI on a loaded 2-core machine). A count has no
# deadline to race; 100000 executions take about 10 s per target on a quiet 2-core machine.
FUZZTIME ?= 100000x
TEST_TIMEOUT ?= 40m

.PHONY: all build cli test lint fmt-check vet staticcheck tidy-check vulncheck race check \
        demo bench bench-report deploy clean fuzz build-CaptureFunction build-ApplyFunction

all: build

## build: both Lambda bootstrap binaries for linux/arm64 under build/
build: $(BUILD_DIR)/capture/bootstrap $(BUILD_DIR)/apply/bootstrap
	@ls -l $(BUILD_DIR)/*/bootstrap

$(BUILD_DIR)/%/bootstrap: FORCE
	@mkdir -p $(dir $@)
	$(LAMBDA_ENV) $(GO) build $(LAMBDA_FLAGS) -o $@ ./functions/$*

FORCE:

## cli: the operator CLI for this machine, stamped with its version and commit (docdbdr --version)
cli:
	$(GO) build -ldflags "-X main.version=$$(git describe --tags --always --dirty 2>/dev/null || echo devel) -X main.commit=$$(git rev-parse HEAD 2>/dev/null)" -o $(BUILD_DIR)/docdbdr ./cmd/docdbdr
	@$(BUILD_DIR)/docdbdr --version

# SAM's `BuildMethod: makefile` calls build-<LogicalId> with ARTIFACTS_DIR set.
build-CaptureFunction:
	$(LAMBDA_ENV) $(GO) build $(LAMBDA_FLAGS) -o $(ARTIFACTS_DIR)/bootstrap ./functions/capture
	@test -f global-bundle.pem || { echo "global-bundle.pem is missing: download the RDS CA bundle first (docs/deployment.md)" >&2; exit 1; }
	cp global-bundle.pem $(ARTIFACTS_DIR)/

build-ApplyFunction:
	$(LAMBDA_ENV) $(GO) build $(LAMBDA_FLAGS) -o $(ARTIFACTS_DIR)/bootstrap ./functions/apply
	@test -f global-bundle.pem || { echo "global-bundle.pem is missing: download the RDS CA bundle first (docs/deployment.md)" >&2; exit 1; }
	cp global-bundle.pem $(ARTIFACTS_DIR)/

## check: every gate CI runs: gofmt, vet, staticcheck, tidy, govulncheck, race, short fuzz, all tests
check: fmt-check vet staticcheck tidy-check vulncheck race fuzz test
	@echo "make check: all gates passed"

## test: vet and every test, including the end-to-end suite on the embedded stack
test: vet
	$(GO) test $(GOFLAGS) -count=1 -timeout $(TEST_TIMEOUT) $(PKGS)

## vet: go vet on the whole tree
vet:
	$(GO) vet $(PKGS)

## lint: gofmt, go vet and staticcheck
lint: fmt-check vet staticcheck

## fmt-check: fails, listing the files, when a tracked Go file is not gofmt-formatted
fmt-check:
	@files=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$files" ]; then echo "not gofmt-formatted (run gofmt -w):" >&2; echo "$$files" >&2; exit 1; fi

## staticcheck: staticcheck at the pinned version, every check it enables by default
staticcheck:
	$(STATICCHECK) $(PKGS)

## tidy-check: fails when go.mod or go.sum is not what `go mod tidy` would write (prints the diff)
tidy-check:
	$(GO) mod tidy -diff

## vulncheck: govulncheck at a pinned version; prints SKIPPED only when its database is unreachable
vulncheck:
	sh reliability/govulncheck.sh

## race: every test under the race detector (all packages: a package without goroutines of its
## own still runs the concurrent code it calls, like the archive's parallel writers). One package
## at a time: under the detector's slowdown, two packages' embedded servers on 2 cores starved
## each other past the 10 s connect timeout (TestGuardRails in CI, 2026-12-02).
race:
	$(GO) test $(GOFLAGS) -race -p 1 -count=1 -timeout $(TEST_TIMEOUT) $(PKGS)

## demo: the whole pipeline on the embedded local stack, replaying the original write-up's checks
demo:
	$(GO) run ./cmd/docdbdr demo

## bench: capture and apply against their raw baselines (interleaved rounds, min/median/max) and
## lag; writes build/bench/report.md (git-ignored). BENCH_FLAGS passes flags (e.g. --sizes 1000000)
bench:
	$(GO) run ./cmd/docdbdr bench --out build/bench $(BENCH_FLAGS)

## bench-report: the same, refreshing the committed bench/report.md and its charts
bench-report:
	$(GO) run ./cmd/docdbdr bench --out bench $(BENCH_FLAGS)

## fuzz: every fuzz target for FUZZTIME each (default 100000 executions; the seed corpora also run in `make test`)
fuzz:
	@n=0; for t in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
	  for f in $$(grep -h '^func Fuzz' $$t/*_test.go | sed 's/func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do \
	    echo "== fuzz $$t $$f for $(FUZZTIME)"; \
	    $(GO) test $(GOFLAGS) -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$t || exit 1; n=$$((n+1)); done; done; \
	  test $$n -gt 0 || { echo "make fuzz: no fuzz target found" >&2; exit 1; }; \
	  echo "make fuzz: $$n fuzz targets passed"

## deploy: sam build and sam deploy (needs the SAM CLI and AWS credentials)
deploy:
	sam build && sam deploy

clean:
	rm -rf $(BUILD_DIR) .aws-sam
