#!/usr/bin/env bash
# Install the Debian packages the test suite drives for real (see
# ../shared/notes/real-components.md). Needs root; skips what is already installed.
set -euo pipefail

packages=(chromium gettext openssh-server iproute2 util-linux iputils-ping nginx shellcheck curl wget)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "Missing Debian packages (${missing[*]}); run 'make test' as root to install them." >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt_install() {
    apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "$@"
}
echo "Installing ${missing[*]} ..."
apt_install "${missing[@]}" >/dev/null || { apt-get -o DPkg::Lock::Timeout=600 update >/dev/null && apt_install "${missing[@]}" >/dev/null; }
