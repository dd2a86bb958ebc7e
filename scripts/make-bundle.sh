#!/usr/bin/env bash
# Builds the offline bundle for the GPU host (which has no network) into .bundle/ (ignored by
# git): the Debian packages of libfuse3, the pyfuse3 source, wheels for Python 3.12 of lmdb,
# trio and their needs, and KvikIO 26.10 (the baseline of the read benchmarks), plus
# install-bundle.sh. Run it on a networked x86_64 Debian/Ubuntu machine, from anywhere:
#   bash scripts/make-bundle.sh            (or: make bundle)
# Then carry `.bundle` to the GPU host; scripts/gpu-check.sh installs it there.
# Uses ../shared/offline-gpu/make-bundle.sh beside the checkout (GPUVFS_OFFLINE_GPU overrides).
set -euo pipefail
cd "$(dirname "$0")/.."
tool=${GPUVFS_OFFLINE_GPU:-../shared/offline-gpu}
[ -x "$tool/make-bundle.sh" ] || [ -f "$tool/make-bundle.sh" ] || {
  echo "make-bundle: $tool/make-bundle.sh not found (set GPUVFS_OFFLINE_GPU to the offline-gpu folder)" >&2; exit 2; }
out=.bundle
limit_mib=${GPUVFS_BUNDLE_LIMIT_MIB:-48}   # the repo + carried paths must stay under 64 MiB
# Start clean: two versions of one wheel stop the whole install on the GPU host.
rm -rf "$out"
bash "$tool/make-bundle.sh" "$out" 3.12 \
  kvikio-cu13==26.10.0 libkvikio-cu13==26.10.0 rapids-logger==0.3.0
[ -f "$out/install-bundle.sh" ] || cp "$tool/install-bundle.sh" "$out/"
echo
echo "bundle contents:"
ls -l "$out"
kib=$(du -sk "$out" | cut -f1)
echo "bundle size: $((kib / 1024)) MiB ($kib KiB)"
if [ "$kib" -gt $((limit_mib * 1024)) ]; then
  echo "make-bundle: WARNING: the bundle is over ${limit_mib} MiB; with the repo it may not fit the" \
       "64 MiB that travels to the GPU host. Largest files:" >&2
  ls -S -l "$out" | head -5 >&2
  exit 1
fi
