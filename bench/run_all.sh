#!/usr/bin/env bash
# Runs every benchmark; arguments (e.g. --quick) are passed to each.
# The Docker and SSH benchmarks use the image CI builds (scripts/build-test-image;
# KP_TEST_IMAGE picks another). A benchmark that cannot run prints
# `SKIPPED: <bench>: <reason>`; every such line is repeated at the end, and in CI (CI
# set) a skipped or failed benchmark fails the run. BENCH_PYTHON picks the interpreter
# (default: the repository's .venv, else python3).
set -uo pipefail
cd "$(dirname "$0")"
IMAGE=${KP_TEST_IMAGE:-kernel-providers-test:bookworm}
if [ -z "${BENCH_PYTHON:-}" ] && [ -x ../.venv/bin/python ]; then
    BENCH_PYTHON=../.venv/bin/python
    export PATH="$(cd ../.venv/bin && pwd):$PATH"  # its kernel-providers and jupyter
fi
BENCH_PYTHON=${BENCH_PYTHON:-python3}

skipped=()
failed=()
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for script in bench_*.py; do
    echo "== $script"
    extra=()
    case $script in
        bench_docker.py|bench_ssh.py) extra=(--image "$IMAGE") ;;
    esac
    "$BENCH_PYTHON" "$script" ${extra[@]+"${extra[@]}"} "$@" | tee "$out"
    status=${PIPESTATUS[0]}
    while IFS= read -r line; do skipped+=("$line"); done < <(grep '^SKIPPED:' "$out")
    if [ "$status" != 0 ]; then failed+=("$script (exit status $status)"); fi
done

if [ ${#skipped[@]} != 0 ]; then
    echo
    echo "!!!!!!!! ${#skipped[@]} benchmark(s) did not run:"
    printf '%s\n' "${skipped[@]}"
fi
if [ ${#failed[@]} != 0 ]; then
    echo
    echo "!!!!!!!! failed: ${failed[*]}"
    exit 1
fi
if [ ${#skipped[@]} != 0 ] && [ -n "${CI:-}" ]; then
    echo "CI must run every benchmark (see .ci/run)"
    exit 1
fi
