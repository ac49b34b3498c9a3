#!/usr/bin/env bash
# Build qgnn_run against the TVM runtime libraries of an installed apache-tvm / apache-tvm-ffi wheel.
#
#   bash runtimes/cpp/build.sh SITE OUT [CXX]
#
# SITE holds tvm/ and tvm_ffi/ (a site-packages directory, or the aarch64 sysroot's
# ~/.cache/qgnn-deploy/a64/site); CXX defaults to g++ (aarch64-linux-gnu-g++ to cross-compile, from
# Debian's g++-aarch64-linux-gnu).  OUT/ gets qgnn_run plus libtvm_runtime.so and libtvm_ffi.so (found
# through RPATH $ORIGIN), so `scp -r OUT board:` is the whole deployment.  zlib (reading .npz) comes from
# the system (-lz) unless ZLIB_INC (dir with zlib.h) and ZLIB_LIB (libz.a or libz.so.1 path) are set; the
# aarch64 sysroot from export/make_a64_sysroot.sh has both (root/usr/include, root/usr/lib/*/libz.a).
set -euo pipefail
die() { echo "[qgnn_run build] error: $*" >&2; exit 2; }
[[ $# -ge 2 ]] || die "usage: $0 SITE OUT [CXX]"
SITE="$1"; OUT="$2"; CXX="${3:-g++}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
command -v "$CXX" >/dev/null || die "$CXX not found (apt-get install ${CXX%-g++}-g++ or g++-aarch64-linux-gnu)"
for f in tvm/include tvm_ffi/include tvm/lib/libtvm_runtime.so tvm_ffi/lib/libtvm_ffi.so; do
  [[ -e "$SITE/$f" ]] || die "$SITE/$f not found: SITE must hold the apache-tvm and apache-tvm-ffi packages"
done
zinc=(); zlib=(-lz)
if [[ -n "${ZLIB_INC:-}" ]]; then zinc=(-I"$ZLIB_INC"); fi
if [[ -n "${ZLIB_LIB:-}" ]]; then zlib=("$ZLIB_LIB"); fi
mkdir -p "$OUT"
# --no-as-needed: nothing references libtvm_runtime directly, but it registers the .so loader and the VM.
# EXTRA_CXXFLAGS: e.g. "-g -fsanitize=address,undefined" for the sanitizer build the tests run natively.
read -r -a extra <<< "${EXTRA_CXXFLAGS:-}"
"$CXX" -std=c++17 -O2 "${extra[@]}" -o "$OUT/qgnn_run.tmp" "$HERE/qgnn_run.cc" \
  -I"$SITE/tvm/include" -I"$SITE/tvm_ffi/include" "${zinc[@]}" \
  -L"$SITE/tvm/lib" -L"$SITE/tvm_ffi/lib" -Wl,--no-as-needed -ltvm_runtime -ltvm_ffi -Wl,--as-needed \
  "${zlib[@]}" -Wl,-rpath,'$ORIGIN' || die "compiling qgnn_run failed"
cp "$SITE/tvm/lib/libtvm_runtime.so" "$SITE/tvm_ffi/lib/libtvm_ffi.so" "$OUT/"
mv "$OUT/qgnn_run.tmp" "$OUT/qgnn_run"
echo "$OUT/qgnn_run"
