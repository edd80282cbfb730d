#!/usr/bin/env bash
# Installs what the integration tests need, idempotently, and says what it did:
#   - Debian packages: etcd, Prometheus (+ promtool), Go and the tools to build kube-apiserver,
#     buildah, podman and runc for the image
#   - kube-apiserver, built once from Debian's kubernetes source package and cached in
#     $GUARDRAILS_CACHE (default ~/.cache/guardrails), unless $KUBEBUILDER_ASSETS has one.
#   - the Helm engine for the chart tests: helm-python-sdk in a virtualenv in the cache.
set -euo pipefail

CACHE="${GUARDRAILS_CACHE:-$HOME/.cache/guardrails}"
BIN="$CACHE/bin"
mkdir -p "$BIN"

say() { printf 'test-env: %s\n' "$*"; }

. "$(dirname "$0")/packages.sh"

# --- Debian packages -------------------------------------------------------------------
# rsync, make and the others are called by kubernetes' own build scripts (hack/, build/).
PACKAGES=(etcd-server prometheus golang-go dpkg-dev golang-github-modern-go-reflect2-dev openssl python3-venv
  rsync make findutils diffutils gawk coreutils sed grep tar xz-utils ca-certificates
  buildah podman runc)
installed="$(ensure_packages "${PACKAGES[@]}")"
if [ -n "$installed" ]; then
  say "$installed"
  # The Debian prometheus package may start a system service on :9090; tests run their own.
  as_root sh -c 'command -v systemctl >/dev/null && systemctl disable --now prometheus prometheus-node-exporter 2>/dev/null || true'
else
  say "Debian packages present: ${PACKAGES[*]}"
fi
for tool in etcd prometheus promtool; do
  command -v "$tool" >/dev/null || { say "ERROR: $tool not on PATH after install"; exit 1; }
done

# --- Helm engine (helm-python-sdk: Helm's Go SDK behind a C ABI, no helm binary) ------------
HELM_SDK=helm-python-sdk==0.2.2
VENV="$CACHE/helm-venv"
if "$VENV/bin/python" -c 'import helm_python' 2>/dev/null; then
  say "Helm engine present ($VENV)"
else
  say "installing the Helm engine ($HELM_SDK) into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "$HELM_SDK"
fi

# --- kube-apiserver ----------------------------------------------------------------------
if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/kube-apiserver" ]; then
  say "kube-apiserver from KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
  exit 0
fi
if [ -x "$BIN/kube-apiserver" ]; then
  say "kube-apiserver cached at $BIN/kube-apiserver"
  exit 0
fi

# Every tool kubernetes' build calls, checked before a 5-minute build rather than inside it.
for tool in go make rsync find diff awk sed grep tar xz dpkg-source openssl; do
  command -v "$tool" >/dev/null || { say "ERROR: $tool is missing (needed by the kube-apiserver build); install it and run make test-env again"; exit 1; }
done

say "building kube-apiserver from Debian's kubernetes source (one time, ~5 min on 2 cores)"
start=$(date +%s)
APT="$CACHE/apt"
mkdir -p "$APT/lists/partial"
echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main" \
  >"$APT/sources.list"
APT_OPTS=(-o APT::Sandbox::User=root -o "Dir::Etc::SourceList=$APT/sources.list" -o "Dir::Etc::SourceParts=/nonexistent"
  -o "Dir::State::Lists=$APT/lists" -o "Dir::Cache=$APT/cache")
mkdir -p "$APT/cache/archives/partial"
apt-get "${APT_OPTS[@]}" update -qq

SRC="$CACHE/src"
rm -rf "$SRC"
mkdir -p "$SRC"
(cd "$SRC" && apt-get "${APT_OPTS[@]}" source -qq kubernetes >/dev/null 2>&1)
tree=$(find "$SRC" -maxdepth 1 -mindepth 1 -type d -name 'kubernetes-*' | head -n1)
[ -n "$tree" ] || { say "ERROR: apt-get source kubernetes produced no tree"; exit 1; }

# reflect2 1.0.1 (vendored) crashes Go 1.19 binaries on the first custom resource decoded.
REFLECT2=/usr/share/gocode/src/github.com/modern-go/reflect2
rm -rf "$tree/vendor/github.com/modern-go/reflect2"
cp -r "$REFLECT2" "$tree/vendor/github.com/modern-go/reflect2"

GOPATH_DIR="$CACHE/gopath"
mkdir -p "$GOPATH_DIR/src/k8s.io"
ln -sfn "$tree" "$GOPATH_DIR/src/k8s.io/kubernetes"
say "source unpacked; compiling (log: $CACHE/apiserver-build.log)"
(
  cd "$GOPATH_DIR/src/k8s.io/kubernetes"
  export GOPATH="$GOPATH_DIR" CGO_ENABLED=0 GOFLAGS= GOCACHE="$CACHE/gocache"
  make WHAT=cmd/kube-apiserver >"$CACHE/apiserver-build.log" 2>&1
) &
build=$!
ticks=0
while kill -0 "$build" 2>/dev/null; do
  sleep 5
  ticks=$((ticks + 1))
  if [ $((ticks % 6)) = 0 ] && kill -0 "$build" 2>/dev/null; then
    say "still compiling kube-apiserver ($(( $(date +%s) - start ))s)"
  fi
done
wait "$build" || { say "ERROR: build failed, see $CACHE/apiserver-build.log"; tail -30 "$CACHE/apiserver-build.log"; exit 1; }
built=$(find "$tree/_output" -type f -name kube-apiserver -perm -u+x | head -n1)
[ -n "$built" ] || { say "ERROR: no kube-apiserver binary in $tree/_output"; exit 1; }
cp "$built" "$BIN/kube-apiserver.tmp" && mv "$BIN/kube-apiserver.tmp" "$BIN/kube-apiserver"
# The source tree and Go build cache are large and no longer needed.
rm -rf "$SRC" "$GOPATH_DIR" "$CACHE/gocache"
say "built $BIN/kube-apiserver in $(( $(date +%s) - start ))s"
