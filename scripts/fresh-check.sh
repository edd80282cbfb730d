#!/usr/bin/env bash
# `make fresh-check`: proves the README's first commands on a machine that has nothing
# else. A throwaway Debian 12 minbase root is made with debootstrap (from Debian's own
# packages); the committed project (a clone of HEAD) and this machine's Rust toolchain
# are put in; inside it `make test-env`, `make image`, `make demo` and `make demo-down`
# run as on a fresh machine. Prints the wall time and every package the project installed.
#
# Needs root (debootstrap, mounts, chroot). Not part of `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
PROJECT=$(pwd)

say() { printf 'fresh-check: %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

ROOT="${FRESH_ROOT:-${TMPDIR:-/tmp}/guardrails-fresh}"
RUSTUP="${RUSTUP_HOME:-$HOME/.rustup}"
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
[ -d "$RUSTUP" ] && [ -x "$CARGO_BIN/cargo" ] || {
  say "ERROR: no rustup toolchain at $RUSTUP / $CARGO_BIN"
  exit 1
}
command -v debootstrap >/dev/null || {
  say "installing debootstrap"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}

mounts=()
cleanup() {
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do as_root umount -l "${mounts[$i]}" 2>/dev/null || true; done
  [ -n "${KEEP_FRESH_ROOT:-}" ] || as_root rm -rf "$ROOT"
}
trap cleanup EXIT
bind() { # bind SRC DST [ro]
  as_root mkdir -p "$2"
  as_root mount --bind "$1" "$2"
  [ "${3:-}" = ro ] && as_root mount -o remount,bind,ro "$2"
  mounts+=("$2")
}

start=$(date +%s)
as_root rm -rf "$ROOT"
say "debootstrap --variant=minbase bookworm into $ROOT"
as_root debootstrap --variant=minbase bookworm "$ROOT" http://deb.debian.org/debian >"${ROOT%/}.debootstrap.log" 2>&1 ||
  { say "ERROR: debootstrap failed, see ${ROOT%/}.debootstrap.log"; exit 1; }
as_root cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# The root is a mount point, as on a machine: buildah makes / private when it unpacks a
# layer, which fails on a plain directory.
bind "$ROOT" "$ROOT"
bind /proc "$ROOT/proc"
bind /sys "$ROOT/sys"
bind /dev "$ROOT/dev"
bind /dev/pts "$ROOT/dev/pts"
bind "$RUSTUP" "$ROOT/opt/rustup" ro
bind "$CARGO_BIN" "$ROOT/opt/cargo-bin" ro
as_root git clone --quiet "$PROJECT" "$ROOT/project"

# What a machine "with Rust" has beside rustc: the C linker rustc calls, and make.
before=$(as_root chroot "$ROOT" dpkg-query -W -f='${Package}\n' | sort)
inside() {
  as_root chroot "$ROOT" /usr/bin/env -i HOME=/root TERM=dumb \
    PATH=/opt/cargo-bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    RUSTUP_HOME=/opt/rustup CARGO_HOME=/root/.cargo TMPDIR=/tmp \
    bash -c "$1"
}
say "installing the Rust toolchain's own needs: gcc, libc6-dev, make"
inside 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc libc6-dev make ca-certificates >/dev/null'
# The network this machine is on: the certificate authorities it trusts (an egress proxy
# may sign TLS with its own) and pip's configuration, as any machine here would have.
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
  as_root cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
  inside 'update-ca-certificates >/dev/null'
fi
[ -f /etc/pip.conf ] && as_root cp /etc/pip.conf "$ROOT/etc/pip.conf"
with_rust=$(as_root chroot "$ROOT" dpkg-query -W -f='${Package}\n' | sort)

say "make test-env (first time: apt packages and the kube-apiserver build)"
inside 'cd /project && make test-env'
say "make image"
inside 'cd /project && make image'
say "make demo"
inside 'cd /project && make demo'
say "make demo-down"
inside 'cd /project && make demo-down'

after=$(as_root chroot "$ROOT" dpkg-query -W -f='${Package}\n' | sort)
added=$(comm -13 <(echo "$with_rust") <(echo "$after") | tr '\n' ' ')
say "passed in $(($(date +%s) - start))s on a Debian 12 minbase root"
say "packages before: $(echo "$before" | wc -l); the Rust toolchain's needs: $(comm -13 <(echo "$before") <(echo "$with_rust") | tr '\n' ' ')"
say "packages the project installed ($(echo "$added" | wc -w)): $added"
