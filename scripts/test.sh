#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine and runs the whole test suite twice: in a normal build and
# under AddressSanitizer plus UndefinedBehaviorSanitizer; then fuzzes each target for 10 s.
# The builds carry line tables (-g1) rather than full debug information: stack traces keep
# their lines, and a TU compiles about a quarter faster (4.05 s against 3.10 s for
# server_get_test.cpp), which keeps CI on two cores within its 25 minutes.
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

lines_only=(-DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG")
started=$SECONDS
echo "=== format"
bash scripts/format.sh --check
run_suite build "${lines_only[@]}"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  run_suite build-asan -DFERRY_SANITIZE=address,undefined "${lines_only[@]}"
echo "=== fuzz"
fuzz_started=$SECONDS
FUZZ_CMAKE_ARGS="${lines_only[*]}" bash scripts/fuzz.sh 10 fuzz_decode fuzz_server fuzz_client
echo "=== fuzz step took $((SECONDS - fuzz_started)) s"
echo "=== all suites passed in $((SECONDS - started)) s"
