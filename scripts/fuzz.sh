#!/usr/bin/env bash
# Builds ferry's libFuzzer targets with clang (ASan + UBSan) and runs each for a while.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]   each TARGET for SECONDS (default 600); the targets
#                                           are fuzz_decode, fuzz_server and fuzz_client
#                                           (default: all three)
#   scripts/fuzz.sh --regen-corpus          rewrites tests/fuzz/corpus/ with make_corpus
#
# It installs nothing: run scripts/install-deps.sh first (clang and libclang-rt-14-dev). The
# build goes to build-fuzz/ (FERRY_FUZZ_BUILD overrides it). Each target starts from a working
# copy of its seeds in tests/fuzz/corpus/, so the repository's corpus only changes through
# --regen-corpus. For each target that finishes it prints
#   FIGURE: fuzz TARGET execs=N seconds=S
# and it exits non-zero if any target crashed, with the path of the input that reproduces it
# (rerun: build-fuzz/tests/fuzz/TARGET FILE).
set -euo pipefail
cd "$(dirname "$0")/.."

build=${FERRY_FUZZ_BUILD:-build-fuzz}
all_targets=(fuzz_decode fuzz_server fuzz_client)

# corpus_of TARGET: the seed directory under tests/fuzz/corpus/.
corpus_of() {
  case $1 in
    fuzz_decode) echo decode ;;
    fuzz_server) echo server ;;
    fuzz_client) echo client ;;
    *) echo "fuzz: unknown target '$1' (known: ${all_targets[*]})" >&2; return 1 ;;
  esac
}

configure_and_build() {
  local target targets=()
  for target in "$@"; do targets+=(--target "$target"); done
  # FUZZ_CMAKE_ARGS: one extra cmake argument, e.g. the build flags scripts/test.sh uses.
  local extra=()
  [ -n "${FUZZ_CMAKE_ARGS:-}" ] && extra=("$FUZZ_CMAKE_ARGS")
  bash scripts/build.sh "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
    -DFERRY_FUZZ=ON -DFERRY_BUILD_TESTS=OFF "${extra[@]}" "${targets[@]}"
}

if [[ "${1:-}" == "--regen-corpus" ]]; then
  configure_and_build make_corpus
  rm -f tests/fuzz/corpus/decode/*.bin tests/fuzz/corpus/server/*.bin
  "$build/tests/fuzz/make_corpus" tests/fuzz/corpus
  echo "fuzz: wrote $(find tests/fuzz/corpus -name '*.bin' | wc -l) seeds to tests/fuzz/corpus"
  exit 0
fi

seconds=${1:-600}
shift || true
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2; exit 2; }
targets=("$@")
((${#targets[@]})) || targets=("${all_targets[@]}")
for t in "${targets[@]}"; do corpus_of "$t" >/dev/null; done

command -v clang++ >/dev/null || { echo "fuzz: clang++ is missing; run scripts/install-deps.sh" >&2; exit 1; }
configure_and_build "${targets[@]}"

work=$(mktemp -d "${TMPDIR:-/tmp}/ferry-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
artifacts=$(realpath "$build")/artifacts
mkdir -p "$artifacts"

failed=0
for t in "${targets[@]}"; do
  corpus=$work/corpus-$t
  cp -r "tests/fuzz/corpus/$(corpus_of "$t")" "$corpus"
  mkdir -p "$work/tmp-$t"
  log=$work/$t.log
  started=$SECONDS
  # -max_len 8400 lets inputs cross max_request_size (8192); -timeout catches a hang of the
  # server's loop or pool. The fuzz_server tree goes to the target's own TMPDIR.
  rc=0
  TMPDIR=$work/tmp-$t ASAN_OPTIONS=abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    "$build/tests/fuzz/$t" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=30 \
    -max_len=8400 -print_final_stats=1 -artifact_prefix="$artifacts/$t-" "$corpus" \
    >"$log" 2>&1 || rc=$?
  elapsed=$((SECONDS - started))
  runs=$(sed -nE 's/^Done ([0-9]+) runs in .*/\1/p' "$log" | tail -n 1)
  if ((rc != 0)) || [[ -z "$runs" ]]; then
    failed=1
    echo "fuzz: $t FAILED (exit $rc) after $elapsed s; the end of its output:"
    tail -n 60 "$log"
    crash=$(sed -nE 's/.*Test unit written to (.*)$/\1/p' "$log" | tail -n 1)
    echo "fuzz: $t crash input: ${crash:-none written}"
    [[ -n "$crash" ]] && echo "fuzz: reproduce with: $build/tests/fuzz/$t $crash"
    continue
  fi
  # Coverage reached, and for fuzz_server how many inputs were requests that decoded.
  grep -E '^#[0-9]+[[:space:]]+DONE|^fuzz_server: ' "$log" || true
  echo "FIGURE: fuzz $t execs=$runs seconds=$elapsed"
done
exit "$failed"
