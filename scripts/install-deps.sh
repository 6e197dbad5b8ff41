#!/usr/bin/env bash
# Installs what ferry needs to build and test, from Debian's archive. Run as root (or with sudo).
# Installs only what is missing, so a second run costs nothing and needs no network.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libuv1-dev libcereal-dev libfmt-dev doctest-dev libcli11-dev libxxhash-dev nlohmann-json3-dev
  python3 procps iproute2
  libsodium-dev  # the pre-shared key: MAC and AEAD
  libc-ares-dev dnsmasq-base  # DNS discovery; dnsmasq-base is the binary without the service
  # DNS-SD on a LAN: avahi-client to build; the daemon, a D-Bus daemon and avahi-publish for
  # scripts/test_avahi.sh, which starts its own (policy-rc.d below keeps the services down).
  libavahi-client-dev avahi-daemon dbus-daemon avahi-utils
  nftables ethtool iputils-ping  # scripts/netpath.sh: the real-path test
  scdoc mandoc bash-completion
  dpkg-dev systemd strace lintian  # scripts/test_package.sh: the package
  clang libclang-rt-14-dev  # scripts/fuzz.sh; libFuzzer is in libclang-rt-14-dev
  clang-format-14 clang-tidy-14  # scripts/format.sh; FERRY_CLANG_TIDY=ON
  "$@"
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: run as root to install: ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
# No package may start a service behind our back while we install.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee /usr/sbin/policy-rc.d >/dev/null
  "${sudo[@]}" chmod +x /usr/sbin/policy-rc.d
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
