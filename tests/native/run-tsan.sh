#!/usr/bin/env bash
# ThreadSanitizer run of the device protocol code (`make tsan`).
#
# Two harnesses, each built twice with -fsanitize=thread: as is, and with a self-test macro
# (the code broken on purpose, the breakage chosen at run time):
#   tests/native/tsan_hostcall.cpp   the hostcall lanes (-DGVFS_TSAN_SELFTEST)
#   tests/native/tsan_pagetable.cpp  the page table, file cache, fd table and name cache,
#                                    with the warp read path run through device/cpu/launcher.cpp
#                                    (-DGVFS_TSAN_SELFTEST_PT; links libffi)
# Then, for each harness:
#   1. runs it over several shapes (lanes/servers; pool sets x ways, readahead); every run must
#      finish with exit 0, all checks passed and no TSan report;
#   2. runs each broken variant briefly; each must FAIL with a TSan data-race report, which
#      proves the harness can see a missing happens-before edge at all.
# Exits non-zero on any TSan report, failed check, or self-test that was not caught.
# Environment: CXX (default g++), TSAN_ITERS (hostcall calls per device thread, default 4000),
# TSAN_PT_ITERS (page-cache reads per device thread, default 1500).
set -euo pipefail
cd "$(dirname "$0")/../.."

CXX=${CXX:-g++}
ITERS=${TSAN_ITERS:-4000}
PT_ITERS=${TSAN_PT_ITERS:-1500}
BUILD=tests/native/build
mkdir -p "$BUILD"
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1"
FLAGS=(-std=c++20 -O1 -g -fsanitize=thread -I device -pthread -Wall -Wno-unused-function)

fail() { echo "tsan: FAILED: $*" >&2; exit 1; }

# A self-test is caught when a run exits non-zero with a TSan data-race report. Whether one
# run hits the race is a matter of scheduling (hostcall's `unlock` slips through about 1 run
# in 10), so each broken variant gets up to 3 runs, seeds 1..3. Usage: caught LOG CMD...
caught() {
  local log=$1 seed rc
  shift
  for seed in 1 2 3; do
    set +e
    timeout 120 "$@" --seed="$seed" >"$log" 2>&1
    rc=$?
    set -e
    if [ "$rc" -ne 0 ] && grep -q 'WARNING: ThreadSanitizer: data race' "$log"; then return 0; fi
  done
  return 1
}

# The four builds in parallel (2 cores in CI).
"$CXX" "${FLAGS[@]}" tests/native/tsan_hostcall.cpp -o "$BUILD/tsan_hostcall" 2>"$BUILD/build.log" &
p1=$!
"$CXX" "${FLAGS[@]}" -DGVFS_TSAN_SELFTEST tests/native/tsan_hostcall.cpp -o "$BUILD/tsan_hostcall_selftest" \
  2>"$BUILD/build-selftest.log" &
p2=$!
"$CXX" "${FLAGS[@]}" tests/native/tsan_pagetable.cpp -o "$BUILD/tsan_pagetable" -lffi 2>"$BUILD/build-pt.log" &
p3=$!
"$CXX" "${FLAGS[@]}" -DGVFS_TSAN_SELFTEST_PT tests/native/tsan_pagetable.cpp -o "$BUILD/tsan_pagetable_selftest" \
  -lffi 2>"$BUILD/build-pt-selftest.log" &
p4=$!
wait $p1 || { cat "$BUILD/build.log" >&2; fail "could not build the harness with $CXX -fsanitize=thread"; }
wait $p2 || { cat "$BUILD/build-selftest.log" >&2; fail "could not build the self-test harness"; }
wait $p3 || { cat "$BUILD/build-pt.log" >&2; fail "could not build the page-table harness (needs libffi)"; }
wait $p4 || { cat "$BUILD/build-pt-selftest.log" >&2; fail "could not build the page-table self-test harness"; }

t_build=$SECONDS
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

# Self-tests: each broken variant must be caught by TSan (a non-zero exit with a data-race report).
caught=0
modes=(relaxed early submit unlock)
for mode in "${modes[@]}"; do
  log="$BUILD/selftest-$mode.log"
  if ! caught "$log" "$BUILD/tsan_hostcall_selftest" --selftest="$mode" --lanes=2 --threads=4 --iters=300; then
    cat "$log" >&2
    fail "self-test '$mode' (a deliberately racy protocol) was NOT caught by TSan in 3 runs (last log: $log)"
  fi
  caught=$((caught + 1))
done

t_hostcall=$SECONDS
hostcall_summary="tsan: hostcall: $total requests, $reports reports ($run lane/server shapes); self-test: $caught/${#modes[@]} injected races caught ($((t_hostcall - t_build)) s)"

# ---- the page table, file cache, fd table and name cache
# sets ways lanes servers readahead warps: a pool of 32 slots of 256 bytes (the files hold
# ~150 pages), few ways (FULL sets), no readahead (then the same-range rounds fit 4 ways).
reads=0
fills=0
lookups=0
pt_reports=0
pt_run=0
for shape in "4 8 4 1 3 2" "2 16 8 2 7 2" "8 4 3 1 0 1"; do
  read -r sets ways lanes servers ra warps <<<"$shape"
  pt_run=$((pt_run + 1))
  log="$BUILD/pt-run-$pt_run.log"
  set +e
  timeout 300 "$BUILD/tsan_pagetable" --sets="$sets" --ways="$ways" --lanes="$lanes" --servers="$servers" \
    --ra="$ra" --warps="$warps" --iters="$PT_ITERS" --seed="$pt_run" >"$log" 2>&1
  rc=$?
  set -e
  n=$(grep -c 'WARNING: ThreadSanitizer' "$log" || true)
  pt_reports=$((pt_reports + n))
  if [ "$rc" -ne 0 ] || [ "$n" -ne 0 ]; then
    cat "$log" >&2
    fail "pagetable pool=${sets}x$ways lanes=$lanes servers=$servers ra=$ra warps=$warps: exit $rc, $n TSan reports (log: $log)"
  fi
  line=$(grep '^reads=' "$log" || true)
  [ -n "$line" ] || { cat "$log" >&2; fail "no summary line from pagetable pool=${sets}x$ways"; }
  reads=$((reads + $(sed -n 's/^reads=\([0-9]*\) .*/\1/p' <<<"$line")))
  fills=$((fills + $(sed -n 's/.* fills=\([0-9]*\) .*/\1/p' <<<"$line")))
  lookups=$((lookups + $(sed -n 's/.* lookups=\([0-9]*\) .*/\1/p' <<<"$line")))
done

pt_caught=0
pt_modes=(relaxed wait unpin)
for mode in "${pt_modes[@]}"; do
  log="$BUILD/pt-selftest-$mode.log"
  if ! caught "$log" "$BUILD/tsan_pagetable_selftest" --selftest="$mode" --iters=300 --rounds=8 --witers=10; then
    cat "$log" >&2
    fail "page-table self-test '$mode' (a deliberately racy page table) was NOT caught by TSan in 3 runs (last log: $log)"
  fi
  pt_caught=$((pt_caught + 1))
done

echo "$hostcall_summary"
echo "tsan: pagetable: $reads reads, $fills fills, $lookups lookups, $pt_reports reports ($pt_run pool shapes); self-test: $pt_caught/${#pt_modes[@]} injected races caught ($((SECONDS - t_hostcall)) s; builds $t_build s)"
