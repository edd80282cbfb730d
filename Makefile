# Guardrails: build, test and the local test environment.
SHELL := /bin/bash
CARGO ?= cargo

TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)

.PHONY: all build test test-env image crds docs fmt lint bench soak demo demo-down fresh-check

all: build

build:
	$(CARGO) build --workspace

## Install what the tests need (Debian packages, kube-apiserver build), idempotently.
test-env:
	@bash scripts/test-env.sh

## The operator's OCI image from scratch (release binary, Debian-package root, uid 65532):
## target/image/guardrails-<version>.oci.tar, named localhost/guardrails:<version>.
image:
	@bash scripts/image.sh

## Everything CI runs: test environment, formatting, lints, the image (of the tests'
## build: scripts/test.sh), all tests.
test: test-env
	@bash scripts/test.sh

## The demo: local control plane, Prometheus, simulated services, the operator and three
## canary stories; the cluster stays up until `make demo-down`.
demo: test-env
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs), then run make demo again"; exit 1; }
	@echo "==> building the operator, the kubectl plugin and the demo driver"
	$(CARGO) build --workspace --bins
	@$(TARGET_DIR)/debug/guardrails-demo up

## Stops everything `make demo` started and deletes its files.
demo-down:
	@$(CARGO) build --quiet -p guardrails-demo --bin guardrails-demo
	@$(TARGET_DIR)/debug/guardrails-demo down

## The README's commands on a throwaway Debian 12 minbase root (debootstrap) with only
## Rust: make test-env, make demo, make demo-down. Needs root; not part of `make test`.
fresh-check:
	@bash scripts/fresh-check.sh

## Regenerate crds/ and docs/reference.md from the Rust types.
crds:
	rm -f crds/*.yaml
	$(CARGO) run --quiet -- crd --out-dir crds
	rm -f charts/guardrails/crds/*.yaml
	cp crds/*.yaml charts/guardrails/crds/
	$(CARGO) run --quiet -- crd --markdown > docs/reference.md

docs: crds

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## The chaos soak until 100 leader kills (`make test` runs a two-minute one).
soak: test-env
	GUARDRAILS_SOAK_KILLS=100 $(CARGO) test --test soak -- --nocapture

## Benchmarks (real servers; prints figures, asserts nothing about speed).
bench: test-env
	$(CARGO) build --release --bin guardrails
	$(CARGO) bench --bench slo_round
	$(CARGO) bench --bench rollback
	$(CARGO) bench --bench blast_radius
	$(CARGO) bench --bench scale
	$(CARGO) bench --bench memory
