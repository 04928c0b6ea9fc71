#!/usr/bin/env bash
# Install what bench/run.sh needs (Debian/Ubuntu, as root): fio for the random reads; curl for
# the baselines, with jq and openssl for its signed API calls; python3 for the independent API
# client; fuse3 for FUSE mounts.
set -euo pipefail
PACKAGES=(fio curl python3 fuse3 coreutils util-linux jq openssl)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi
echo "bench prerequisites present: ${PACKAGES[*]}"
