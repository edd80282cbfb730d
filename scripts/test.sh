#!/usr/bin/env bash
# What `make test` runs after `make test-env`: fmt, clippy, the tests' build, the image
# and every test. The image packages the operator binary the tests built: the chart's
# tests check how the image is put together and run (root, user, libraries,
# entrypoint), which the release build's whole-program optimisation, minutes on one
# core, does not change. It is tagged <version>-test, apart from the release image
# `make image` packages.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$PWD/$TARGET_DIR" ;; esac

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --no-run
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
GUARDRAILS_BIN="$TARGET_DIR/debug/guardrails" GUARDRAILS_IMAGE_SUFFIX=-test bash scripts/image.sh
GUARDRAILS_IMAGE_ARCHIVE="$TARGET_DIR/image/guardrails-$VERSION-test.oci.tar" \
  cargo test --workspace
