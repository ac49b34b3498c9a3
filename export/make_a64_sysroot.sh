#!/usr/bin/env bash
# Build (once) an aarch64 Python 3.11 sysroot that runs under qemu-user without binfmt_misc:
#
#   DEST/root          Debian bookworm arm64 .debs of Python 3.11 and its shared libraries, unpacked
#                      (dpkg-deb -x; no maintainer scripts run, so no arm64 binaries execute during set-up)
#   DEST/site          aarch64 manylinux wheels (TVM runtime + compiler, tvm-ffi, NumPy, ONNX Runtime ...)
#   DEST/bin/a64python launcher: qemu-aarch64-static -L DEST/root DEST/root/usr/bin/python3.11 "$@"
#   DEST/.stamp        hash of this script's package set; when it matches, a second run returns at once
#
# Usage: bash export/make_a64_sysroot.sh DEST        (export/setup.sh calls it with $QGNN_CACHE/a64)
# Why a sysroot and not `apt-get install python3:arm64`: the postinst scripts would need binfmt_misc,
# which containers usually lack; calling qemu explicitly with -L needs nothing registered.
set -euo pipefail
log() { echo "[a64-sysroot] $*" >&2; }
die() { echo "[a64-sysroot] error: $*" >&2; exit 2; }

[[ $# -eq 1 && -n "$1" ]] || die "usage: $0 DEST"
DEST="$1"
mkdir -p "$DEST" || die "cannot create $DEST"
DEST="$(cd "$DEST" && pwd)"

# Debian arm64 packages: Python 3.11 and every shared library its interpreter and stdlib modules load.
DEBS=(libc6 libgcc-s1 libstdc++6 libgomp1 zlib1g libexpat1 libffi8 libssl3 libbz2-1.0 liblzma5
      libsqlite3-0 libuuid1 libncursesw6 libtinfo6 libreadline8 libdb5.3 libgdbm6 libgdbm-compat4
      libcrypt1 libnsl2 libtirpc3 libzstd1 libmd0 libselinux1 libpcre2-8-0 libacl1 libgssapi-krb5-2
      libkrb5-3 libk5crypto3 libkrb5support0 libkeyutils1 libcom-err2 python3.11 python3.11-minimal
      libpython3.11-minimal libpython3.11-stdlib
      zlib1g-dev)   # headers + libz.so for cross-compiling runtimes/cpp (the C++ runner reads .npz)
DEBS_ALL=(media-types)   # architecture "all"
# aarch64 wheels (cp311, manylinux_2_28). Pins follow pyproject.toml; tvm-ffi 0.1.15.x segfaults TVM.
WHEELS=(apache-tvm==0.27.0.post1 apache-tvm-ffi==0.1.14.post1 "numpy>=1.26,<2.5" ml_dtypes
        typing_extensions psutil cloudpickle onnxruntime==1.31.1 flatbuffers packaging protobuf)

want="$( { printf '%s\n' "${DEBS[@]}" "${DEBS_ALL[@]}" "${WHEELS[@]}"; echo v2-cpuinfo; } | sha256sum | cut -d' ' -f1)"
up_to_date() { [[ -f "$DEST/.stamp" && "$(cat "$DEST/.stamp")" == "$want" && -x "$DEST/bin/a64python" ]]; }
if up_to_date; then
  log "up to date: $DEST"
  exit 0
fi
# One builder at a time (parallel test runs may all find the sysroot missing); the others wait, then
# find it built.
exec 9>"$DEST/.lock"
if command -v flock >/dev/null; then
  flock 9
  if up_to_date; then
    log "up to date: $DEST (built by a concurrent run)"
    exit 0
  fi
fi

# ---- tools ----------------------------------------------------------------------------------
command -v qemu-aarch64-static >/dev/null || die "qemu-aarch64-static not found: apt-get install qemu-user-static"
command -v dpkg-deb >/dev/null || die "dpkg-deb not found: apt-get install dpkg"
command -v apt-get >/dev/null || die "apt-get not found: this script needs a Debian/Ubuntu host (package apt)"
PY="${PYTHON:-python3}"
"$PY" -m pip --version >/dev/null 2>&1 || die "pip not found for $PY: apt-get install python3-pip"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || die "not root and no sudo: run as root or apt-get install sudo"
  SUDO="sudo"
fi

t0=$SECONDS
rm -rf "$DEST"/.partial*
WORK="$(mktemp -d "$DEST/.partial.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/root" "$WORK/site" "$WORK/bin" "$DEST/debs"

# ---- arm64 .debs --------------------------------------------------------------------------
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  log "dpkg --add-architecture arm64"
  $SUDO dpkg --add-architecture arm64
fi
if ! apt-cache show python3.11:arm64 >/dev/null 2>&1; then
  log "apt-get update (arm64 package lists)"
  $SUDO apt-get update -qq || die "apt-get update failed (no access to the Debian archive?)"
fi
specs=()
for p in "${DEBS[@]}"; do specs+=("$p:arm64"); done
specs+=("${DEBS_ALL[@]}")
log "downloading ${#specs[@]} .debs into $DEST/debs (cached)"
missing_debs=()
for s in "${specs[@]}"; do
  name="${s%%:*}"
  compgen -G "$DEST/debs/${name}_*.deb" >/dev/null || missing_debs+=("$s")
done
if ((${#missing_debs[@]})); then
  # apt-get download writes to the current directory; as root the _apt sandbox warning is harmless.
  (cd "$DEST/debs" && apt-get download -qq "${missing_debs[@]}" 2>&1 | grep -v "sandbox" >&2 || true)
  for s in "${missing_debs[@]}"; do
    compgen -G "$DEST/debs/${s%%:*}_*.deb" >/dev/null || die "could not download $s (apt-get download $s)"
  done
fi
for f in "$DEST"/debs/*.deb; do dpkg-deb -x "$f" "$WORK/root"; done
[[ -x "$WORK/root/usr/bin/python3.11" ]] || die "python3.11 missing from the unpacked arm64 debs"
# qemu-user 7.2 passes the host's x86 /proc/cpuinfo through; ONNX Runtime's CPU detection finds no ARM
# processor in it and segfaults on import.  qemu resolves guest paths under -L first, so an ARMv8
# cpuinfo (generic Cortex-A72, NEON only) at ROOT/proc/cpuinfo is what the guest reads instead.
# Its "Hardware" line names the emulation; runtimes/qgnn_bench.py also detects qemu without it.
for i in $(seq 0 63); do
  printf 'processor\t: %d\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n' "$i"
  printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n'
done > "$WORK/root/proc.cpuinfo.tmp"
mkdir -p "$WORK/root/proc"
{ cat "$WORK/root/proc.cpuinfo.tmp"; printf 'Hardware\t: qemu-user emulation (cpuinfo from make_a64_sysroot.sh)\n'; } \
  > "$WORK/root/proc/cpuinfo"
rm -f "$WORK/root/proc.cpuinfo.tmp"

# ---- aarch64 wheels -------------------------------------------------------------------------
log "pip install --target (aarch64 wheels: ${WHEELS[*]})"
"$PY" -m pip install -q --disable-pip-version-check --target "$WORK/site" --no-deps \
  --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 \
  --implementation cp --python-version 3.11 --only-binary=:all: "${WHEELS[@]}" \
  || die "pip could not fetch the aarch64 wheels (${WHEELS[*]})"

# ---- launcher ---------------------------------------------------------------------------------
cat > "$WORK/bin/a64python" <<'EOF'
#!/bin/sh
# aarch64 Python 3.11 under qemu-user (generated by export/make_a64_sysroot.sh); relocatable.
A64="$(cd "$(dirname "$0")/.." && pwd)"
unset PYTHONHOME
PYTHONPATH="$A64/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONNOUSERSITE=1 \
  exec qemu-aarch64-static -L "$A64/root" "$A64/root/usr/bin/python3.11" "$@"
EOF
chmod +x "$WORK/bin/a64python"

# ---- swap into place, then smoke-test ---------------------------------------------------------
rm -f "$DEST/.stamp"
mkdir -p "$WORK/old"
for d in root site bin; do
  if [[ -e "$DEST/$d" ]]; then mv "$DEST/$d" "$WORK/old/$d"; fi
  mv "$WORK/$d" "$DEST/$d"
done
rm -rf "$WORK"
out="$("$DEST/bin/a64python" -c \
  'import platform, numpy, tvm, onnxruntime; print(platform.machine(), numpy.__version__, tvm.__version__, onnxruntime.__version__)' 2>&1)" \
  || die "smoke test failed: $out"
log "smoke test: $out"
echo "$want" > "$DEST/.stamp"
log "built $DEST in $((SECONDS - t0)) s"
