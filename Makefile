# docdb-dr — the two commands that matter first: `make demo` and `make test`.

GO       ?= go
GOFLAGS  ?=
PKGS     := ./...
# Lambda binaries: provided.al2023 on arm64 runs a static executable named bootstrap.
LAMBDA_ENV   := GOOS=linux GOARCH=arm64 CGO_ENABLED=0
LAMBDA_FLAGS := -trimpath -ldflags='-s -w' -tags lambda.norpc
BUILD_DIR    := build

.PHONY: all build test test-short test-e2e lint vet demo bench deploy clean fuzz \
        build-CaptureFunction build-ApplyFunction

all: build

## build: both Lambda bootstrap binaries for linux/arm64 under build/
build: $(BUILD_DIR)/capture/bootstrap $(BUILD_DIR)/apply/bootstrap
	@ls -l $(BUILD_DIR)/*/bootstrap

$(BUILD_DIR)/%/bootstrap: FORCE
	@mkdir -p $(dir $@)
	$(LAMBDA_ENV) $(GO) build $(LAMBDA_FLAGS) -o $@ ./functions/$*

FORCE:

# SAM's `BuildMethod: makefile` calls build-<LogicalId> with ARTIFACTS_DIR set.
build-CaptureFunction:
	$(LAMBDA_ENV) $(GO) build $(LAMBDA_FLAGS) -o $(ARTIFACTS_DIR)/bootstrap ./functions/capture
	@test -f global-bundle.pem || { echo "global-bundle.pem is missing: download the RDS CA bundle first (docs/deployment.md)" >&2; exit 1; }
	cp global-bundle.pem $(ARTIFACTS_DIR)/

build-ApplyFunction:
	$(LAMBDA_ENV) $(GO) build $(LAMBDA_FLAGS) -o $(ARTIFACTS_DIR)/bootstrap ./functions/apply
	@test -f global-bundle.pem || { echo "global-bundle.pem is missing: download the RDS CA bundle first (docs/deployment.md)" >&2; exit 1; }
	cp global-bundle.pem $(ARTIFACTS_DIR)/

## test: vet and every test, including the end-to-end suite on the embedded stack
test: vet
	$(GO) test $(GOFLAGS) -count=1 -timeout 40m $(PKGS)

## vet: go vet on the whole tree
vet:
	$(GO) vet $(PKGS)

## lint: go vet and staticcheck (installed with go install at a pinned version)
lint: vet
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.7.0 $(PKGS)

## demo: the whole pipeline on the embedded local stack, replaying the original write-up's checks
demo:
	$(GO) run ./cmd/docdbdr demo

## bench: throughput and lag figures; writes bench/report.md and a chart
bench:
	$(GO) run ./cmd/docdbdr bench

## fuzz: a short run of every fuzz target (the seed corpora run in `make test` anyway)
fuzz:
	@for t in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
	  for f in $$(grep -h '^func Fuzz' $$t/*_test.go | sed 's/func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do \
	    echo "== $$t $$f"; $(GO) test -run XXX -fuzz "^$$f$$" -fuzztime 20s $$t || exit 1; done; done

## deploy: sam build and sam deploy (needs the SAM CLI and AWS credentials)
deploy:
	sam build && sam deploy

clean:
	rm -rf $(BUILD_DIR) .aws-sam
