#!/usr/bin/env bash
# What `make test` runs after `make test-env`: fmt, clippy, the tests' build, the image
# and every test. The image packages the operator binary the tests built: the chart's
# tests check how the image is put together and run (root, user, libraries,
# entrypoint), which the release build's whole-program optimisation, minutes on one
# core, does not change. `make image` packages the release build.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET_DIR="${CARGO_TARGET_DIR:-target}"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --no-run
GUARDRAILS_BIN="$TARGET_DIR/debug/guardrails" bash scripts/image.sh
cargo test --workspace
