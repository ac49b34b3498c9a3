#!/usr/bin/env bash
# Idempotent set-up of everything qgnn-deploy needs on a Debian/Ubuntu x86-64 host:
# the pinned Python packages (torch CPU 2.13.0 first, so nothing pulls CUDA), the aarch64
# cross toolchain and qemu-user, and the cached aarch64 test sysroot.  The Dockerfile runs
# this same script, and CI runs it through export/run.sh, so every step is exercised.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${QGNN_CACHE:-$HOME/.cache/qgnn-deploy}"
mkdir -p "$CACHE"
log() { echo "[setup] $*" >&2; }

# ---- system packages (cross compiler, emulator, file, llvm-mca for the ARM GEMM estimate) -----
APT_PKGS=(gcc-aarch64-linux-gnu g++-aarch64-linux-gnu binutils-aarch64-linux-gnu qemu-user-static file llvm)
missing=()
for p in "${APT_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  if [[ "${QGNN_SKIP_APT:-0}" == 1 ]]; then
    log "skipping apt (QGNN_SKIP_APT=1); missing: ${missing[*]}"
  else
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    log "installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi
# llvm-mca >= 19 has Neoverse N1/V1/N2 scheduling models (Debian 12's default llvm is 14); best effort.
if [[ "${QGNN_SKIP_APT:-0}" != 1 ]] && ! command -v llvm-mca-19 >/dev/null && apt-cache show llvm-19 >/dev/null 2>&1; then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends llvm-19 >/dev/null \
    || log "llvm-19 not installed (optional: the ARM llvm-mca estimate then uses the default llvm-mca)"
fi

# ---- python packages --------------------------------------------------------------------
stamp="$CACHE/pip.stamp"
want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]] || ! python3 -c "import qgnn_deploy" 2>/dev/null; then
  log "installing Python packages"
  python3 -m pip install -q "torch==2.13.0"
  python3 -m pip install -q -e "$ROOT[dev]"
  echo "$want" > "$stamp"
fi
# A checkout elsewhere (e.g. CI's fresh clone) must import its own sources, not an older editable install.
installed_from="$(cd / && python3 -c 'import pathlib, qgnn_deploy; print(pathlib.Path(qgnn_deploy.__file__).resolve().parents[1])' 2>/dev/null || true)"
if [[ "$installed_from" != "$(cd "$ROOT" && pwd -P)" ]]; then
  log "pointing the editable install at $ROOT"
  python3 -m pip install -q --no-deps -e "$ROOT"
fi

# ---- aarch64 sysroot for running the arm64 artifact under qemu-user --------------------
if [[ -x "$ROOT/export/make_a64_sysroot.sh" && "${QGNN_SKIP_SYSROOT:-0}" != 1 ]]; then
  bash "$ROOT/export/make_a64_sysroot.sh" "${QGNN_A64_SYSROOT:-$CACHE/a64}"   # where qgnn_deploy.arm64 looks
fi
log "ready"
