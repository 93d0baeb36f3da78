#!/bin/sh
# Installs the Debian packages named on the command line that are missing.
# Non-interactive; needs root (or nothing to install).
missing=""
for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "ember: missing Debian packages:$missing" >&2
    echo "ember: run 'make deps' as root (or: sudo apt-get install$missing)" >&2
    exit 1
fi
echo "ember: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq || exit 1
apt-get install -y -qq --no-install-recommends $missing || exit 1
