#!/usr/bin/env bash
# Installs the system packages gpuvfs needs where they are missing (as root, with apt-get):
# g++ and libffi-dev for the cpu backend, fuse3/libfuse3-dev/pkg-config for the FUSE mount.
set -euo pipefail
need=()
for p in g++ libffi-dev pkg-config fuse3 libfuse3-dev; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "gpuvfs setup: please install: ${need[*]} (needs root and apt-get)" >&2
  exit 1
fi
echo "gpuvfs setup: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${need[@]}" >/dev/null
