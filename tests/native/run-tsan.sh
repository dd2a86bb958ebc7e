#!/usr/bin/env bash
# ThreadSanitizer run of the device protocol code (`make tsan`).
#
# Builds tests/native/tsan_hostcall.cpp twice with -fsanitize=thread: as is, and with
# -DGVFS_TSAN_SELFTEST (protocol broken on purpose, chosen at run time). Then:
#   1. runs the harness over several lane/server shapes; every run must finish with exit 0,
#      all checks passed and no TSan report;
#   2. runs each broken variant briefly; each must FAIL with a TSan data-race report, which
#      proves this harness can see a missing happens-before edge at all.
# Exits non-zero on any TSan report, failed check, or self-test that was not caught.
# Environment: CXX (default g++), TSAN_ITERS (calls per device thread, default 4000).
set -euo pipefail
cd "$(dirname "$0")/../.."

CXX=${CXX:-g++}
ITERS=${TSAN_ITERS:-4000}
BUILD=tests/native/build
mkdir -p "$BUILD"
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1"
FLAGS=(-std=c++20 -O1 -g -fsanitize=thread -I device -pthread -Wall -Wno-unused-function)

fail() { echo "tsan: FAILED: $*" >&2; exit 1; }

# The two builds in parallel (2 cores in CI).
"$CXX" "${FLAGS[@]}" tests/native/tsan_hostcall.cpp -o "$BUILD/tsan_hostcall" 2>"$BUILD/build.log" &
p1=$!
"$CXX" "${FLAGS[@]}" -DGVFS_TSAN_SELFTEST tests/native/tsan_hostcall.cpp -o "$BUILD/tsan_hostcall_selftest" \
  2>"$BUILD/build-selftest.log" &
p2=$!
wait $p1 || { cat "$BUILD/build.log" >&2; fail "could not build the harness with $CXX -fsanitize=thread"; }
wait $p2 || { cat "$BUILD/build-selftest.log" >&2; fail "could not build the self-test harness"; }

total=0
reports=0
run=0
# lanes servers threads: few lanes so they are contended (1 lane: every call fights for it).
for shape in "4 1 16" "8 2 16" "1 1 16" "16 4 16"; do
  read -r lanes servers threads <<<"$shape"
  run=$((run + 1))
  log="$BUILD/run-$run.log"
  set +e
  timeout 300 "$BUILD/tsan_hostcall" --lanes="$lanes" --servers="$servers" --threads="$threads" \
    --iters="$ITERS" --seed="$run" >"$log" 2>&1
  rc=$?
  set -e
  n=$(grep -c 'WARNING: ThreadSanitizer' "$log" || true)
  reports=$((reports + n))
  if [ "$rc" -ne 0 ] || [ "$n" -ne 0 ]; then
    cat "$log" >&2
    fail "hostcall lanes=$lanes servers=$servers threads=$threads: exit $rc, $n TSan reports (log: $log)"
  fi
  req=$(sed -n 's/^requests=\([0-9]*\) .*/\1/p' "$log")
  [ -n "$req" ] || { cat "$log" >&2; fail "no summary line from lanes=$lanes servers=$servers"; }
  total=$((total + req))
done

# Self-tests: each broken variant must be caught by TSan (exit 66 with a data-race report).
caught=0
modes=(relaxed early submit unlock)
for mode in "${modes[@]}"; do
  log="$BUILD/selftest-$mode.log"
  set +e
  timeout 120 "$BUILD/tsan_hostcall_selftest" --selftest="$mode" --lanes=2 --threads=4 --iters=300 >"$log" 2>&1
  rc=$?
  set -e
  if [ "$rc" -eq 0 ] || ! grep -q 'WARNING: ThreadSanitizer: data race' "$log"; then
    cat "$log" >&2
    fail "self-test '$mode' (a deliberately racy protocol) was NOT caught by TSan (exit $rc, log: $log)"
  fi
  caught=$((caught + 1))
done

echo "tsan: hostcall: $total requests, $reports reports ($run lane/server shapes); self-test: $caught/${#modes[@]} injected races caught"
