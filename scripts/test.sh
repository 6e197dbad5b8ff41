#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine and runs the whole test suite twice: in a normal build and
# under AddressSanitizer plus UndefinedBehaviorSanitizer; then fuzzes for about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh

run_suite() {
  local dir=$1; shift
  echo "=== build $dir $*"
  bash scripts/build.sh "$dir" "$@"
  echo "=== test $dir"
  ctest --test-dir "$dir" --output-on-failure -j 2 --timeout 900
}

started=$SECONDS
echo "=== format"
bash scripts/format.sh --check
run_suite build
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  run_suite build-asan -DFERRY_SANITIZE=address,undefined
echo "=== fuzz"
fuzz_started=$SECONDS
bash scripts/fuzz.sh 30 fuzz_decode fuzz_server fuzz_client
echo "=== fuzz step took $((SECONDS - fuzz_started)) s"
echo "=== all suites passed in $((SECONDS - started)) s"
