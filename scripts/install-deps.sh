#!/usr/bin/env bash
# Install everything qstep needs on Debian 12, idempotently:
#   Debian packages (only the missing ones), and a venv with qstep in the cache dir.
# Usage: scripts/install-deps.sh   (QSTEP_CACHE overrides ~/.cache/qstep)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cache=${QSTEP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qstep}
venv="$cache/venv"
packages=(qemu-system-x86 gdb clang-19 llvm-19 busybox-static cpio libbpf-dev libelf-dev
          zlib1g-dev libzstd-dev bpftool gcc make python3-venv linux-libc-dev lcov
          libglib2.0-dev pkg-config)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "qstep: installing Debian packages: ${missing[*]}"
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "qstep: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    sudo=sudo
  fi
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

mkdir -p "$cache"
stamp="$venv/.qstep-installed"
want=$(sha256sum "$here/pyproject.toml" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "qstep: creating the venv in $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -e "$here[dev]"
  echo "$want" > "$stamp"
fi
ln -sfn "$venv" "$here/.venv"
# The emulator: QEMU 10 from bookworm-backports, unpacked into the cache (QSTEP_QEMU=system
# uses the system's QEMU instead, without the recorder).
"$venv/bin/qstep" images qemu >/dev/null
# Node tools (VS Code's DAP test client, mocha, vsce for `make vsix`), pinned by
# scripts/node/package-lock.json, installed into the cache.
node_dir="$cache/node"
want_node=$(sha256sum "$here/scripts/node/package-lock.json" | cut -d' ' -f1)
if command -v npm >/dev/null && [ "$(cat "$node_dir/.qstep-installed" 2>/dev/null)" != "$want_node" ]; then
  echo "qstep: installing Node tools into $node_dir"
  mkdir -p "$node_dir"
  cp "$here/scripts/node/package.json" "$here/scripts/node/package-lock.json" "$node_dir/"
  (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want_node" > "$node_dir/.qstep-installed"
elif ! command -v npm >/dev/null; then
  echo "qstep: npm is missing (Debian package npm): the DAP client tests and 'make vsix' need it" >&2
fi
