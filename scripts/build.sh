#!/usr/bin/env bash
# Configures and builds ferry with warnings as errors.
# Usage: scripts/build.sh [BUILD_DIR] [--target NAME]... [extra cmake args...]
#
# BUILD_DIR (default build) may already exist, configured by hand or by an earlier run, with any
# generator and build type: a new tree is made with Ninja when it is installed, an existing one
# keeps the generator it has (CMake refuses to switch), and the build type is left to the tree
# (CMakeLists.txt makes a new one RelWithDebInfo); extra args such as -DCMAKE_BUILD_TYPE=Release
# change it. --target builds only those targets (and what they need), not everything.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}
shift || true
targets=()
args=()
while (($#)); do
  if [[ $1 == --target ]]; then
    (($# >= 2)) || { echo "build.sh: --target needs a name" >&2; exit 2; }
    targets+=("$2")
    shift 2
  else
    args+=("$1")
    shift
  fi
done
generator=()
if [[ ! -f $dir/CMakeCache.txt ]] && command -v ninja >/dev/null; then
  generator=(-G Ninja)
fi
cmake -S . -B "$dir" "${generator[@]}" -DFERRY_WERROR=ON "${args[@]}" >/dev/null
cmake --build "$dir" -j "${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
  ${targets[@]+--target "${targets[@]}"}
