#!/usr/bin/env bash
# The soak test for one minute (half a minute with sanitizers, whose build runs the whole suite
# again): 64 client loops against one ferryd, direct and through impairing proxies; see
# scripts/soak.sh, which runs for 10 minutes by default.
here=$(dirname "${BASH_SOURCE[0]}")
minutes=1
if [ -n "${FERRYD:-}" ] && LC_ALL=C grep -q -a -m1 __asan_init "$FERRYD"; then minutes=0.5; fi
exec bash "$here/soak.sh" "$minutes"
