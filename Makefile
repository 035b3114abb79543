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

FUZZ_TARGETS ?= FuzzFrameDecoder FuzzSession FuzzTPMAttest FuzzTPMPublic FuzzTPMSignature FuzzEventLog FuzzSNPReport FuzzEvidenceDocuments FuzzATLSCertificate FuzzEnvelope FuzzPolicy
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 10
# make vm-test: the whole real-boot test is killed after this many seconds.
VM_TEST_TIMEOUT ?= 900

# make install: where, and from which build (release, or debug for a layout check); NO_BUILD=1 installs what is built.
DESTDIR ?=
PREFIX ?= /usr
BUILD_CONFIG ?= release
INSTALL_PRODUCTS := keyd trustd keydctl asterism

.PHONY: help deps build check-imports check-systemd check-selinux format check-format test demo demo-keyd vm-test bench fuzz fuzz-smoke install clean

help: ## List the targets
	@echo "Asterism make targets:"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'
	@echo "Variables: SCRATCH (swift --scratch-path), DESTDIR, PREFIX (default /usr), BUILD_CONFIG (release or debug), NO_BUILD, FUZZ_TARGETS, FUZZ_SECONDS (default 60), FUZZ_SMOKE_SECONDS (default 10), FUZZ_JOBS (smoke targets at a time, default nproc), VM_TEST_TIMEOUT (make vm-test, default 900 s); scripts/vm-test reads VM_CACHE, VM_KEEP=1, VM_BOOT_TIMEOUT, VM_FIGURES"

deps: ## Install the Debian packages that are missing
	scripts/install-deps

build: ## Debug build of every target and test
	$(SWIFT) build $(SWIFT_FLAGS) --build-tests

check-imports: build ## Prove the import-rule check bites, then check keyd's closure
	scripts/check-keyd-imports --self-test
	scripts/check-keyd-imports

check-systemd: build ## Check the units: verify (no ordering cycle), exposure (keyd <= 2.0, trustd <= 1.5), paths against the code and docs, make install's tree
	scripts/check-systemd --self-test
	scripts/check-systemd

check-selinux: deps ## Prove the policy checks bite, then build selinux/, link it into Debian's refpolicy (scratch store) and check it
	scripts/check-selinux --self-test
	scripts/check-selinux

# Every Swift file of the package, its benchmarks, tests and the fuzz package (.swift-format: swift-nio's style, 120 columns).
FORMAT_PATHS := Package.swift Sources Tests Benchmarks

format: ## Format every Swift file in place with swift-format (.swift-format)
	$(SWIFT) format format --recursive --in-place --parallel $(FORMAT_PATHS)

check-format: ## Fail when a Swift file is not as `make format` leaves it
	$(SWIFT) format lint --strict --recursive --parallel $(FORMAT_PATHS)

test: deps check-format check-selinux build check-imports check-systemd fuzz-smoke ## Check formatting and the SELinux policy, build, check keyd's imports and the systemd units, run every fuzz target briefly, run every test (CI runs this)
	$(SWIFT) test $(SWIFT_FLAGS) --skip-build

demo: deps ## A three-node cluster on this machine (network namespaces, swtpm, keyd, trustd each): init, join, verify, rejoin, recover
	$(SWIFT) build $(SWIFT_FLAGS) --product keyd
	$(SWIFT) build $(SWIFT_FLAGS) --product keydctl
	$(SWIFT) build $(SWIFT_FLAGS) --product trustd
	$(SWIFT) build $(SWIFT_FLAGS) --product asterism
	scripts/demo

vm-test: deps ## A real boot: a Debian guest under qemu (swtpm vTPM, dm-crypt state disk) joins a control plane on this machine, reboots, is refused (root)
	scripts/install-deps --vm
	$(SWIFT) build $(SWIFT_FLAGS) --product keyd
	$(SWIFT) build $(SWIFT_FLAGS) --product keydctl
	$(SWIFT) build $(SWIFT_FLAGS) --product trustd
	$(SWIFT) build $(SWIFT_FLAGS) --product asterism
	timeout --kill-after=30 $(VM_TEST_TIMEOUT) scripts/vm-test

demo-keyd: deps ## One keyd on swtpm in a temp dir, driven with keydctl (TPM quote, KEK, state-disk image)
	$(SWIFT) build $(SWIFT_FLAGS) --product keyd
	$(SWIFT) build $(SWIFT_FLAGS) --product keydctl
	scripts/demo-keyd

bench: deps ## Release keyd (static stdlib) against keyd-bench; state-disk unlock check (root); attestation validations/s; aTLS handshakes/s beside plain TLS; keyd start with a 1 GiB audit log; key releases/s through keyd; join tickets/s end to end, rejoin beside clevis, a boot storm; the cluster lifecycle (init, join, rejoin times over 10 runs of scripts/demo, root)
	$(SWIFT) build $(SWIFT_FLAGS) $(RELEASE_FLAGS) --product keyd
	$(SWIFT) build $(SWIFT_FLAGS) $(RELEASE_FLAGS) --product keyd-bench
	$(SWIFT) build $(SWIFT_FLAGS) $(RELEASE_FLAGS) --product statedisk-bench
	$(SWIFT) build $(SWIFT_FLAGS) $(RELEASE_FLAGS) --product tpm-bench
	$(SWIFT) build $(SWIFT_FLAGS) $(RELEASE_FLAGS) --product attestation-bench
	$(SWIFT) build $(SWIFT_FLAGS) $(RELEASE_FLAGS) --product atls-bench
	$(SWIFT) build $(SWIFT_FLAGS) $(RELEASE_FLAGS) --product audit-bench
	$(SWIFT) build $(SWIFT_FLAGS) $(RELEASE_FLAGS) --product release-bench
	$(SWIFT) build $(SWIFT_FLAGS) $(RELEASE_FLAGS) --product join-bench
	$(SWIFT) build $(SWIFT_FLAGS) $(RELEASE_FLAGS) --product lifecycle-bench
	$(SWIFT) build $(SWIFT_FLAGS) $(RELEASE_FLAGS) --product keydctl
	$(SWIFT) build $(SWIFT_FLAGS) $(RELEASE_FLAGS) --product trustd
	$(SWIFT) build $(SWIFT_FLAGS) $(RELEASE_FLAGS) --product asterism
	bin=$$($(SWIFT) build $(SWIFT_FLAGS) $(RELEASE_FLAGS) --show-bin-path); \
	"$$bin/keyd-bench" --keyd "$$bin/keyd"; \
	"$$bin/tpm-bench" --keyd "$$bin/keyd"; \
	"$$bin/attestation-bench" --testdata Tests/TestVectors; \
	"$$bin/atls-bench"; \
	"$$bin/audit-bench" --keyd "$$bin/keyd"; \
	"$$bin/release-bench" --keyd "$$bin/keyd"; \
	"$$bin/join-bench" --keyd "$$bin/keyd"; \
	if [[ $$(id -u) == 0 ]]; then "$$bin/statedisk-bench"; else echo "statedisk-bench skipped: needs root"; fi; \
	if [[ $$(id -u) == 0 ]]; then "$$bin/lifecycle-bench"; else echo "lifecycle-bench skipped: needs root"; fi

fuzz: deps ## Run each libFuzzer target of Tests/KeydFuzz for FUZZ_SECONDS (the campaign; its corpus grows in .build)
	SWIFT=$(SWIFT) scripts/fuzz $(FUZZ_SECONDS) $(FUZZ_TARGETS)

fuzz-smoke: deps ## Run each libFuzzer target for FUZZ_SMOKE_SECONDS over its committed corpus (make test runs it)
	SWIFT=$(SWIFT) scripts/fuzz --smoke $(FUZZ_SMOKE_SECONDS) $(FUZZ_TARGETS)

install: ## Build release keyd, trustd, keydctl, asterism and lay them out with units, sysusers, tmpfiles, presets, policy sources and docs under DESTDIR
	$(if $(NO_BUILD),,for product in $(INSTALL_PRODUCTS); do \
	  $(SWIFT) build $(SWIFT_FLAGS) $(if $(filter release,$(BUILD_CONFIG)),$(RELEASE_FLAGS)) --product $$product; done)
	BIN_DIR=$(or $(SCRATCH),.build)/$(BUILD_CONFIG) DESTDIR=$(DESTDIR) PREFIX=$(PREFIX) scripts/install-tree

clean: ## Remove build output (.build or SCRATCH, and the fuzz package's)
	rm -rf $(or $(SCRATCH),.build) Tests/KeydFuzz/.build
