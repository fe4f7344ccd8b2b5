# annex: an aggregated Kubernetes API server for custom resources.

SHELL := /usr/bin/env bash -o pipefail
.DEFAULT_GOAL := help

BIN_DIR      := bin
ANNEX        := $(BIN_DIR)/annex-apiserver
KUBECTL_ANNEX := $(BIN_DIR)/kubectl-annex
RUN_DIR      := .annex
RUN_PORT     ?= 8443
# The test control plane lives outside the clone, keyed by version.
TOOLS_BIN     = $(shell hack/tools/install.sh --print)
GO_TEST_FLAGS ?=

# The release version (git describe, or the chart's appVersion as a
# development build in a clone without tags; see hack/version.sh), stamped
# into pkg/version. SOURCE_DATE_EPOCH (the commit's time unless set) is the
# build date and every time in the image, so that builds are reproducible.
ifeq ($(origin VERSION),undefined)
VERSION := $(shell hack/version.sh)
endif
ifeq ($(origin SOURCE_DATE_EPOCH),undefined)
SOURCE_DATE_EPOCH := $(shell hack/version.sh --epoch)
endif
export VERSION SOURCE_DATE_EPOCH
LDFLAGS := $(shell VERSION=$(VERSION) SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) hack/version.sh --ldflags)

# The container image (hack/image assembles it; no container engine needed).
IMAGE_REPOSITORY ?= ghcr.io/annex-dev/annex-apiserver
IMAGE_PLATFORMS  ?= linux/amd64 linux/arm64
IMAGE_ARCHIVE    ?= $(BIN_DIR)/annex-apiserver.oci.tar
IMAGE_SOURCE     ?= https://github.com/annex-dev/annex
IMAGE_LICENSES   ?= Apache-2.0
# The tests build the amd64 image alone, and run annex from the binary
# taken out of it.
TEST_IMAGE_ARCHIVE := $(BIN_DIR)/test-image/annex-apiserver.oci.tar
TEST_IMAGE_BIN     := $(BIN_DIR)/test-image/annex-apiserver

##@ General

.PHONY: help
help: ## Show the targets.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} /^[a-zA-Z_-]+:.*?##/ { printf "  %-18s %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Build and run

.PHONY: build
# make build compiles as make image does (static, -trimpath), so that the
# image's build for this machine's platform reuses the compiled packages.
build: ## Build bin/annex-apiserver (static) and the kubectl plugin bin/kubectl-annex, stamped with the version.
	CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)" -o $(ANNEX) ./cmd/annex-apiserver
	CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)" -o $(KUBECTL_ANNEX) ./cmd/kubectl-annex

# The kubectl plugin for each platform a release ships it for.
PLUGIN_PLATFORMS ?= linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64

.PHONY: plugin-archives
plugin-archives: ## Build kubectl-annex for each of PLUGIN_PLATFORMS into bin/release/, one archive per platform, as releases ship it.
	@set -e; mkdir -p $(BIN_DIR)/release; \
	for p in $(PLUGIN_PLATFORMS); do \
		os=$${p%/*}; arch=$${p#*/}; ext=; [ $$os = windows ] && ext=.exe; \
		dir=$(BIN_DIR)/release/kubectl-annex-$$os-$$arch; mkdir -p $$dir; \
		echo "go build $$p -> $$dir/kubectl-annex$$ext"; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch go build -trimpath -ldflags "-s -w $(LDFLAGS)" -o $$dir/kubectl-annex$$ext ./cmd/kubectl-annex; \
		tar -C $$dir --sort=name --owner=0 --group=0 --numeric-owner --mtime=@$(SOURCE_DATE_EPOCH) \
			-czf $(BIN_DIR)/release/kubectl-annex-$$os-$$arch.tar.gz .; \
	done; \
	cd $(BIN_DIR)/release && sha256sum kubectl-annex-*.tar.gz > kubectl-annex.sha256

.PHONY: version
version: ## Print the version that builds are stamped with.
	@echo $(VERSION)

.PHONY: image
image: ## Build the OCI image for linux/amd64 and linux/arm64 into bin/annex-apiserver.oci.tar (no Docker engine needed).
	@set -e; platforms=""; \
	for p in $(IMAGE_PLATFORMS); do \
		out=$(BIN_DIR)/$${p%/*}-$${p#*/}/annex-apiserver; \
		echo "go build $$p -> $$out"; \
		CGO_ENABLED=0 GOOS=$${p%/*} GOARCH=$${p#*/} go build -trimpath -ldflags "-s -w $(LDFLAGS)" -o $$out ./cmd/annex-apiserver; \
		platforms="$$platforms --platform=$$p=$(CURDIR)/$$out"; \
	done; \
	cd hack/image && go run . build $$platforms --repository=$(IMAGE_REPOSITORY) --version=$(VERSION) \
		--revision=$$(git rev-parse HEAD 2>/dev/null) --source=$(IMAGE_SOURCE) --licenses=$(IMAGE_LICENSES) \
		--epoch=$(SOURCE_DATE_EPOCH) --out=$(abspath $(IMAGE_ARCHIVE))

.PHONY: run
run: build ## Run annex standalone on its embedded etcd; data and kubeconfig in .annex/.
	@mkdir -p $(RUN_DIR)
	@echo "annex: starting in standalone mode on https://127.0.0.1:$(RUN_PORT), data in $(RUN_DIR)/data"
	@echo "annex: in another terminal:"
	@echo "         export KUBECONFIG=$(CURDIR)/$(RUN_DIR)/kubeconfig"
	@echo "         kubectl api-resources --api-group=annex.dev"
	@echo "         kubectl apply -f config/samples/"
	@echo "annex: (no kubectl? 'make kubectl' builds one, about 2 minutes, into \$$(hack/tools/install.sh --print)/kubectl)"
	$(ANNEX) --mode=standalone --bind-address=127.0.0.1 --secure-port=$(RUN_PORT) \
		--data-dir=$(RUN_DIR)/data --admin-kubeconfig=$(RUN_DIR)/kubeconfig

##@ Development

.PHONY: generate
generate: ## Regenerate deepcopy, conversion, defaults, OpenAPI and clients.
	hack/update-codegen.sh

.PHONY: verify
verify: verify-gofmt verify-vet verify-codegen verify-manifests ## Check formatting, vet, and that generated code and manifests are current.

.PHONY: manifests
manifests: ## Render the plain manifests in config/ from charts/annex.
	hack/update-manifests.sh

.PHONY: verify-manifests
verify-manifests: ## Fail when config/ is not what charts/annex renders.
	hack/verify-manifests.sh

.PHONY: lint-chart
lint-chart: tools ## Lint charts/annex strictly.
	$(TOOLS_BIN)/helm lint --strict charts/annex

.PHONY: verify-codegen
verify-codegen: ## Fail when generated code is stale (leaves the tree as it is).
	hack/verify-codegen.sh

.PHONY: verify-gofmt
verify-gofmt: ## Fail when a Go file is not gofmt'ed.
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

.PHONY: verify-vet
verify-vet: ## Run go vet, integration tests included.
	go vet ./...
	go vet -tags integration ./test/... ./pkg/...
	cd bench && go vet -tags integration ./...
	cd hack/image && go vet ./...

.PHONY: tools
tools: ## Build the test control plane (kube-apiserver, etcd, kubectl, ...) into a cache.
	hack/tools/install.sh

.PHONY: kubectl
kubectl: ## Build only kubectl v1.36.3 into the tools cache (about 2 minutes), for trying annex without the test control plane.
	@bin=$$(hack/tools/install.sh kubectl) && echo "kubectl: $$bin/kubectl"

##@ Test

# The amd64 image alone, and its binary taken out of it.
.PHONY: test-image-build
test-image-build:
	$(MAKE) image IMAGE_PLATFORMS=linux/amd64 IMAGE_ARCHIVE=$(TEST_IMAGE_ARCHIVE)
	cd hack/image && go run . extract --archive=$(abspath $(TEST_IMAGE_ARCHIVE)) --platform=linux/amd64 \
		--file=/annex-apiserver --out=$(abspath $(TEST_IMAGE_BIN))

.PHONY: test
test: test-unit test-fuzz-short test-image test-integration test-chart bench-quick ## Run all tests (unit, a short fuzzing, the image's, integration, the Helm chart's) and the quick benchmark.

.PHONY: test-unit
test-unit: ## Run the unit tests (the fuzz targets' seed corpora included).
	go test $(GO_TEST_FLAGS) ./...

# The fuzz targets, as package:target. go fuzzes one target of one package
# per run; the seed corpora are in each package's testdata/fuzz/<target>/.
FUZZ_TARGETS := \
	./pkg/registry/annex/hostedresource:FuzzHostedResource \
	./pkg/registry/annex/storagebackend:FuzzStorageBackend \
	./pkg/controllers/hostedresource:FuzzHostedCreate \
	./pkg/storage/lean:FuzzReadStoredMetadata
# How long each target is fuzzed, as a count of inputs (Nx). A duration
# (-fuzztime 10s) fails now and then with "context deadline exceeded" and no
# failing input on a loaded machine: Go 1.26's fuzzing coordinator can report
# its own deadline as the target's failure (golang/go#75804, fixed in Go
# 1.27). A count has no deadline. 10,000 inputs take 2 to 8 s per target on
# 2 idle cores (FuzzHostedCreate is the slowest, about 1,200 inputs/s).
FUZZTIME ?= 200000x

.PHONY: test-fuzz
test-fuzz: ## Fuzz each target (HostedResource and StorageBackend validation, a hosted type's create path, the lean cache's reading of stored metadata) for FUZZTIME inputs (default 200000x; a count, not a duration: see the comment).
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; target=$${t#*:}; \
		echo "go test -fuzz $$target $$pkg for $(FUZZTIME)"; \
		go test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) -parallel 2 $$pkg; \
	done

.PHONY: test-fuzz-short
test-fuzz-short: ## Fuzz each target for 10,000 inputs (seconds each), as make test does.
	$(MAKE) test-fuzz FUZZTIME=10000x

.PHONY: test-image
test-image: test-image-build ## Test the image: its platforms, entrypoint, user and labels, its binary's --version, and that a second build gives the same digest.
	cd hack/image && ANNEX_IMAGE_ARCHIVE=$(abspath $(TEST_IMAGE_ARCHIVE)) ANNEX_IMAGE_PLATFORMS="linux/amd64" \
		go test -count=1 -timeout 15m $(GO_TEST_FLAGS) ./...

.PHONY: postgres
postgres: ## Install PostgreSQL's server binaries if missing (the tests start their own servers).
	hack/install-postgres.sh

.PHONY: test-integration
test-integration: tools build postgres ## Run the integration tests: a real kube-apiserver, the upstream storage suite on every store, PostgreSQL's metrics.
	KUBEBUILDER_ASSETS=$(TOOLS_BIN) go test -tags integration -count=1 -timeout 20m $(GO_TEST_FLAGS) ./pkg/storage/suite/ ./pkg/storage/postgres/ ./pkg/storage/backend/ ./pkg/cmd/uninstall/
	KUBEBUILDER_ASSETS=$(TOOLS_BIN) ANNEX_APISERVER_BIN=$(CURDIR)/$(ANNEX) \
		go test -tags integration -count=1 -timeout 30m $(GO_TEST_FLAGS) ./test/annexserver/ ./test/integration/...
	KUBEBUILDER_ASSETS=$(TOOLS_BIN) ANNEX_APISERVER_BIN=$(CURDIR)/$(ANNEX) \
		go test -tags integration -count=1 -timeout 5m $(GO_TEST_FLAGS) ./test/rollout/
	KUBEBUILDER_ASSETS=$(TOOLS_BIN) ANNEX_APISERVER_BIN=$(CURDIR)/$(ANNEX) \
		go test -tags integration -count=1 -timeout 5m $(GO_TEST_FLAGS) ./test/etcdfault/
	KUBEBUILDER_ASSETS=$(TOOLS_BIN) ANNEX_APISERVER_BIN=$(CURDIR)/$(ANNEX) \
		go test -tags integration -count=1 -timeout 10m $(GO_TEST_FLAGS) ./test/faults/

.PHONY: test-faults
test-faults: tools build postgres ## Run the fault tests' long version under clients whose history is checked (test/history): annex killed 10 times, PostgreSQL killed 6 times, annex stopped (SIGSTOP) 5 times, the etcd leader killed 5 times, 4 rolling restarts of two replicas on PostgreSQL (directly and through the aggregator), the embedded etcd's and PostgreSQL's disks filled (a tmpfs, as root) and etcd's quota reached; a storm of 20 concurrent full LISTs of 100,000 reports beside other clients; and the kills, stops and storm again through a real kube-apiserver's aggregator, the storm also against a priority level that cannot borrow; about 30 minutes; ANNEX_HISTORY_DIR=dir keeps each history.
	KUBEBUILDER_ASSETS=$(TOOLS_BIN) ANNEX_APISERVER_BIN=$(CURDIR)/$(ANNEX) ANNEX_FAULTS_LONG=1 \
		go test -tags integration -count=1 -timeout 50m -v $(GO_TEST_FLAGS) ./test/faults/

.PHONY: test-chart
test-chart: tools test-image-build ## Test charts/annex: lint, render, dry-run, install, serve and uninstall in a real kube-apiserver, annex run from the image's binary.
	KUBEBUILDER_ASSETS=$(TOOLS_BIN) ANNEX_APISERVER_BIN=$(abspath $(TEST_IMAGE_BIN)) \
		go test -tags integration -count=1 -timeout 15m $(GO_TEST_FLAGS) ./test/chart/...

##@ Benchmarks

# The benchmark is its own Go module (bench/go.mod) so that its plotting
# dependencies stay out of annex's go.mod; it imports the integration
# framework, hence -tags integration. Each report has a command of its own
# under bench/cmd; the logic is in bench/internal/bench.
BENCH_RUN = cd bench && KUBEBUILDER_ASSETS=$(TOOLS_BIN) ANNEX_APISERVER_BIN=$(CURDIR)/$(ANNEX) go run -tags integration

.PHONY: bench
bench: tools build ## Benchmark A (CRD), B (annex) and C (annex via the aggregator), under 30 minutes on 2 cores: docs/benchmarks.md, plots, profiles in bench/out/. BENCH_FLAGS=--hosted-cache=WatchCache measures B and C with the watch cache instead of the default lean cache.
	$(BENCH_RUN) ./cmd/compare --out=out --doc=../docs/benchmarks.md --plots=../docs/benchmarks --command="make bench $(BENCH_FLAGS)" $(BENCH_FLAGS)

.PHONY: bench-backends
bench-backends: tools build postgres ## Measure annex on each store (embedded etcd, external etcd, PostgreSQL): creates and watch latency across two replicas, under 5 minutes; writes the section "Storage backends" of docs/benchmarks.md.
	$(BENCH_RUN) ./cmd/backends --out=out/backends --doc=../docs/benchmarks.md --command="make bench-backends"

# The object count of bench-capacity, and further flags of its command (for
# example --stores=embedded-etcd --annex-memory-limit=3GiB); the report's
# command names them when they are not the defaults.
BENCH_CAPACITY_COUNT ?= 1000000
BENCH_CAPACITY_FLAGS ?=

.PHONY: bench-capacity
bench-capacity: tools build postgres ## Fill one hosted type with 1,000,000 objects (BENCH_CAPACITY_COUNT) on the embedded etcd and on PostgreSQL and measure annex on it: start to ready, RSS and heap, paged LIST, watch; about 40 minutes on 2 cores; writes the section "Capacity" of docs/benchmarks.md.
	$(BENCH_RUN) ./cmd/capacity --count=$(BENCH_CAPACITY_COUNT) --out=out/capacity --doc=../docs/benchmarks.md $(BENCH_CAPACITY_FLAGS) \
		--command="make bench-capacity$(if $(filter-out 1000000,$(BENCH_CAPACITY_COUNT)), BENCH_CAPACITY_COUNT=$(BENCH_CAPACITY_COUNT))$(if $(BENCH_CAPACITY_FLAGS), BENCH_CAPACITY_FLAGS='$(BENCH_CAPACITY_FLAGS)')"

# The object counts of bench-adoption, comma-separated; the report's command
# names them when they are not the default.
BENCH_ADOPTION_COUNTS ?= 10000,100000
comma := ,

.PHONY: bench-adoption
bench-adoption: tools build ## Adopt a CRD of the cluster filled with 10,000 then 100,000 objects (BENCH_ADOPTION_COUNTS) with kubectl annex adopt while a writer writes at 20/s, then release it with kubectl annex release: total time, copy and write-back rates, write freezes, errors, annex's memory; about 35 minutes on 2 cores; writes the section "Adoption" of docs/benchmarks.md.
	$(BENCH_RUN) ./cmd/adoption --count=$(BENCH_ADOPTION_COUNTS) --out=out/adoption --doc=../docs/benchmarks.md \
		--command="make bench-adoption$(if $(filter-out 10000$(comma)100000,$(BENCH_ADOPTION_COUNTS)), BENCH_ADOPTION_COUNTS=$(BENCH_ADOPTION_COUNTS))"

.PHONY: bench-quick
bench-quick: tools build postgres ## Prove the benchmark harness end to end in seconds (tiny counts, output in a temp dir, no thresholds).
	cd bench && KUBEBUILDER_ASSETS=$(TOOLS_BIN) ANNEX_APISERVER_BIN=$(CURDIR)/$(ANNEX) go test -tags integration -count=1 ./...
	@out=$$(mktemp -d -t annex-bench-XXXXXX) && echo "bench-quick: output in $$out" && \
		$(BENCH_RUN) ./cmd/compare --quick --out=$$out --command="make bench-quick"

.PHONY: fresh-check
fresh-check: ## Run CI (.ci/run) in a fresh clone with an empty HOME, module, build and tools cache, as on a new machine (about 40 minutes on 2 cores).
	hack/fresh-check.sh

.PHONY: clean
clean: ## Remove build output (not .annex/ data, not the tools cache).
	rm -rf $(BIN_DIR)
