#!/usr/bin/env bash
# Builds the operator's OCI image from scratch: the release binary on a minimal root made
# from Debian packages (glibc, libgcc, CA certificates), run as user 65532, no shell, no
# package manager. Saves it as an OCI archive, target/image/guardrails-<version>.oci.tar,
# named localhost/guardrails:<version> (the chart's default image).
#   GUARDRAILS_BIN    binary to package (default: target/release/guardrails, built here)
#   GUARDRAILS_IMAGE_SUFFIX  appended to the tag and the archive's name (make test's
#                     image of the tests' build is <version>-test)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/packages.sh

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
TAG="$VERSION${GUARDRAILS_IMAGE_SUFFIX:-}"
NAME="localhost/guardrails:$TAG"
OUT="$TARGET_DIR/image"
ARCHIVE="$OUT/guardrails-$TAG.oci.tar"
ROOT="$OUT/rootfs"
BIN="${GUARDRAILS_BIN:-}"
say() { printf 'image: %s\n' "$*"; }

ensure_packages buildah
start=$(date +%s)
if [ -z "$BIN" ]; then
  say "building the release binary"
  cargo build --release --quiet --bin guardrails
  BIN="$TARGET_DIR/release/guardrails"
fi

# The root: the shared libraries the binary links (ldd: libc, libm, libgcc_s, the loader)
# and the CA bundle, from the Debian packages this machine runs, so they match the glibc
# the binary was linked against.
rm -rf "$ROOT" "$OUT/debs"
mkdir -p "$ROOT" "$OUT/debs"
(cd "$OUT/debs" && apt_download libc6 libgcc-s1 ca-certificates)
for deb in "$OUT"/debs/*.deb; do dpkg-deb -x "$deb" "$OUT/debs/root"; done
X="$OUT/debs/root"
mkdir -p "$ROOT/lib/x86_64-linux-gnu" "$ROOT/lib64" "$ROOT/usr/local/bin" "$ROOT/etc/ssl/certs" "$ROOT/tmp"
for lib in libc.so.6 libm.so.6 libgcc_s.so.1; do
  cp -L "$X/lib/x86_64-linux-gnu/$lib" "$ROOT/lib/x86_64-linux-gnu/"
done
cp -L "$X/lib64/ld-linux-x86-64.so.2" "$ROOT/lib64/"
cat "$X"/usr/share/ca-certificates/mozilla/*.crt >"$ROOT/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/nonexistent:/nonexistent\nnonroot:x:65532:65532:nonroot:/nonexistent:/nonexistent\n' >"$ROOT/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$ROOT/etc/group"
printf 'hosts: files dns\n' >"$ROOT/etc/nsswitch.conf"
install -m 0755 "$BIN" "$ROOT/usr/local/bin/guardrails"
chmod 1777 "$ROOT/tmp"

# The image, in buildah's vfs storage (no overlay or fuse needed), then the archive.
export STORAGE_DRIVER=vfs
ctr="$(buildah from scratch)"
trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
buildah copy --quiet "$ctr" "$ROOT" / >/dev/null
buildah config \
  --user 65532:65532 \
  --workingdir / \
  --entrypoint '["/usr/local/bin/guardrails"]' \
  --cmd '["run"]' \
  --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --label org.opencontainers.image.title=guardrails \
  --label org.opencontainers.image.version="$VERSION" \
  --label org.opencontainers.image.description="Kubernetes operator: SLO budgets gate canary rollouts" \
  "$ctr"
buildah commit --quiet --rm "$ctr" "$NAME" >/dev/null
trap - EXIT
rm -f "$ARCHIVE"
buildah push --quiet "$NAME" "oci-archive:$ARCHIVE:$NAME"
size=$(du -m "$ARCHIVE" | cut -f1)
say "$NAME -> $ARCHIVE (${size} MiB, $(($(date +%s) - start)) s)"
