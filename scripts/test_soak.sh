#!/usr/bin/env bash
# The soak test for one minute: 64 client loops against one ferryd, direct and through impairing
# proxies; see scripts/soak.sh, which runs for 10 minutes by default.
exec bash "$(dirname "${BASH_SOURCE[0]}")/soak.sh" 1
