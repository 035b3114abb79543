# Asterism build glue: short recipes, the work is in scripts/ and Package.swift.
# `make SCRATCH=.build-me test` builds in another scratch path instead of .build.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
.NOTPARALLEL:

SWIFT ?= swift
SCRATCH ?=
export SCRATCH
SWIFT_FLAGS := $(if $(SCRATCH),--scratch-path $(SCRATCH))
RELEASE_FLAGS := -c release --static-swift-stdlib

FUZZ_DIR := Tests/KeydFuzz
FUZZ_TARGETS ?= FuzzFrameDecoder FuzzSession FuzzTPMAttest FuzzTPMPublic FuzzTPMSignature FuzzEventLog FuzzSNPReport FuzzEvidenceDocuments FuzzATLSCertificate
FUZZ_SECONDS ?= 60
# Swift 6.3 on Linux needs both sanitizer spellings and --product (Tests/KeydFuzz/README.md):
# --sanitize stops SwiftPM renaming main, -Xswiftc keeps coverage on rebuilds, --product keeps
# -parse-as-library away from the root package's executables.
FUZZ_FLAGS := -c debug --sanitize=fuzzer --sanitize=address \
	-Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library \
	$(if $(SCRATCH),--scratch-path $(abspath $(SCRATCH))/fuzz)
# libFuzzer writes new inputs to the first corpus dir (ignored by git) and crashes to artifacts;
# Swift's own backtracer is off there (under libFuzzer+ASan it hangs after a crash).
FUZZ_WORK := $(abspath $(FUZZ_DIR))/.build/fuzz-work

.PHONY: help deps build check-imports test demo bench fuzz clean

help: ## List the targets
	@echo "Asterism make targets:"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'
	@echo "Variables: SCRATCH (swift --scratch-path), FUZZ_TARGETS, FUZZ_SECONDS (default 60)"

deps: ## Install the Debian packages that are missing
	scripts/install-deps

build: ## Debug build of every target and test
	$(SWIFT) build $(SWIFT_FLAGS) --build-tests

check-imports: build ## Prove the import-rule check bites, then check keyd's closure
	scripts/check-keyd-imports --self-test
	scripts/check-keyd-imports

test: deps build check-imports ## Build, check keyd's imports, run every test (CI runs this)
	$(SWIFT) test $(SWIFT_FLAGS) --skip-build

demo: deps ## Start swtpm and keyd in a temp dir and drive them with keydctl (TPM quote, KEK, state-disk image)
	$(SWIFT) build $(SWIFT_FLAGS) --product keyd
	$(SWIFT) build $(SWIFT_FLAGS) --product keydctl
	scripts/demo

bench: deps ## Release keyd (static stdlib) against keyd-bench; state-disk unlock check (root); attestation validations/s; aTLS handshakes/s beside plain TLS
	$(SWIFT) build $(SWIFT_FLAGS) $(RELEASE_FLAGS) --product keyd
	$(SWIFT) build $(SWIFT_FLAGS) $(RELEASE_FLAGS) --product keyd-bench
	$(SWIFT) build $(SWIFT_FLAGS) $(RELEASE_FLAGS) --product statedisk-bench
	$(SWIFT) build $(SWIFT_FLAGS) $(RELEASE_FLAGS) --product tpm-bench
	$(SWIFT) build $(SWIFT_FLAGS) $(RELEASE_FLAGS) --product attestation-bench
	$(SWIFT) build $(SWIFT_FLAGS) $(RELEASE_FLAGS) --product atls-bench
	bin=$$($(SWIFT) build $(SWIFT_FLAGS) $(RELEASE_FLAGS) --show-bin-path); \
	"$$bin/keyd-bench" --keyd "$$bin/keyd"; \
	"$$bin/tpm-bench" --keyd "$$bin/keyd"; \
	"$$bin/attestation-bench" --testdata Tests/TestVectors; \
	"$$bin/atls-bench"; \
	if [[ $$(id -u) == 0 ]]; then "$$bin/statedisk-bench"; else echo "statedisk-bench skipped: needs root"; fi

fuzz: deps ## Run each libFuzzer target of Tests/KeydFuzz for FUZZ_SECONDS
	for t in $(FUZZ_TARGETS); do (cd $(FUZZ_DIR) && $(SWIFT) build $(FUZZ_FLAGS) --product $$t); done
	bin=$$(cd $(FUZZ_DIR) && $(SWIFT) build $(FUZZ_FLAGS) --show-bin-path); \
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p "$(FUZZ_DIR)/Corpus/$$t" "$(FUZZ_WORK)/corpus/$$t" "$(FUZZ_WORK)/artifacts/$$t"; \
	  echo "== fuzz $$t for $(FUZZ_SECONDS)s (crashes go to $(FUZZ_WORK)/artifacts/$$t/)"; \
	  SWIFT_BACKTRACE=enable=no "$$bin/$$t" -max_total_time=$(FUZZ_SECONDS) -artifact_prefix="$(FUZZ_WORK)/artifacts/$$t/" \
	    "$(FUZZ_WORK)/corpus/$$t" "$(FUZZ_DIR)/Corpus/$$t" \
	    || { echo "fuzz: $$t failed; reproduce with $$bin/$$t <artifact>" >&2; exit 1; }; \
	done

clean: ## Remove build output (.build or SCRATCH, and the fuzz package's)
	rm -rf $(or $(SCRATCH),.build) $(FUZZ_DIR)/.build
