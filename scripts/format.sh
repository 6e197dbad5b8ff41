#!/usr/bin/env bash
# Formats the C++ sources under common/ server/ client/ tests/ with clang-format and the
# repository's .clang-format.
# Usage: scripts/format.sh            reformats every file in place
#        scripts/format.sh --check    changes nothing; lists the files that differ, exits 1 if any
# Installs clang-format (scripts/install-deps.sh) if it is missing. Bounded: each clang-format
# run has FORMAT_TIMEOUT seconds (default 60).
set -euo pipefail
cd "$(dirname "$0")/.."
check=0
case "${1:-}" in
  "") ;;
  --check) check=1 ;;
  *) echo "usage: scripts/format.sh [--check]" >&2; exit 2 ;;
esac
limit=${FORMAT_TIMEOUT:-60}

find_clang_format() {
  local c
  for c in clang-format-14 clang-format; do
    if command -v "$c" >/dev/null; then echo "$c"; return 0; fi
  done
  return 1
}
if ! cf=$(find_clang_format); then
  bash scripts/install-deps.sh
  cf=$(find_clang_format) || { echo "format: clang-format is missing" >&2; exit 1; }
fi

mapfile -d '' files < <(find common server client tests -type f \
  \( -name '*.cpp' -o -name '*.hpp' -o -name '*.h' -o -name '*.cc' \) -print0 | sort -z)
if ((check == 0)); then
  timeout -k 5 "$limit" "$cf" --style=file -i -- "${files[@]}"
  echo "format: formatted ${#files[@]} files"
  exit 0
fi
differ=0
for f in "${files[@]}"; do
  if ! timeout -k 5 "$limit" "$cf" --style=file --dry-run --Werror -- "$f" >/dev/null 2>&1; then
    echo "$f"
    differ=$((differ + 1))
  fi
done
if ((differ > 0)); then
  echo "format: $differ of ${#files[@]} files differ from .clang-format; run scripts/format.sh" >&2
  exit 1
fi
