#!/usr/bin/env bash
# The README's two commands:  `bash export/run.sh demo`  and  `bash export/run.sh test`.
# Each first runs export/setup.sh (idempotent, quick once done), then the job.
#   test      the default suite (what CI runs; excludes the long `slow` tests), extra args go to pytest
#   test-all  the default suite, then `-m slow` (the long suites: TVM builds, end-to-end CLI runs)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cmd="${1:-demo}"; shift || true
bash "$ROOT/export/setup.sh"
cd "$ROOT"
case "$cmd" in
  demo)  exec qgnn demo "$@" ;;
  test)  exec python3 -m pytest -q "$@" ;;
  test-all)
    rc=0
    python3 -m pytest -q "$@" || rc=$?
    python3 -m pytest -q -m slow "$@" || rc=$?
    exit "$rc" ;;
  setup) exit 0 ;;
  *) echo "usage: bash export/run.sh {demo|test|test-all|setup} [args...]" >&2; exit 2 ;;
esac
