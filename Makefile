# Guardrails: build, test and the local test environment.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: all build test test-env crds fmt lint bench

all: build

build:
	$(CARGO) build --workspace

## Install what the tests need (Debian packages, kube-apiserver build), idempotently.
test-env:
	@bash scripts/test-env.sh

## Everything CI runs: test environment, formatting, lints, all tests.
test: test-env
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) test --workspace

## Regenerate crds/ from the Rust types.
crds:
	rm -f crds/*.yaml
	$(CARGO) run --quiet -- crd --out-dir crds

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Benchmarks (real servers; prints figures, asserts nothing about speed).
bench: test-env
	$(CARGO) build --release --bin guardrails
	$(CARGO) bench --bench slo_round
	$(CARGO) bench --bench rollback
