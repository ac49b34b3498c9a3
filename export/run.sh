#!/usr/bin/env bash
# The README's two commands:  `bash export/run.sh demo`  and  `bash export/run.sh test`.
# Each first runs export/setup.sh (idempotent, quick once done), then the job.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cmd="${1:-demo}"; shift || true
bash "$ROOT/export/setup.sh"
cd "$ROOT"
case "$cmd" in
  demo)  exec qgnn demo "$@" ;;
  test)  exec python3 -m pytest -q "$@" ;;
  setup) exit 0 ;;
  *) echo "usage: bash export/run.sh {demo|test|setup} [args...]" >&2; exit 2 ;;
esac
