#!/usr/bin/env bash
# Runs every benchmark; arguments (e.g. --quick) are passed to each.
set -euo pipefail
cd "$(dirname "$0")"
for script in bench_*.py; do
    echo "== $script"
    python "$script" "$@"
done
