#!/usr/bin/env bash
# ThreadSanitizer run of the device protocol code (`make tsan`).
#
# Two harnesses, each built twice with -fsanitize=thread: as is, and with a self-test macro
# (the code broken on purpose, the breakage chosen at run time):
#   tests/native/tsan_hostcall.cpp   the hostcall lanes (-DGVFS_TSAN_SELFTEST)
#   tests/native/tsan_pagetable.cpp  the page table, file cache, fd table and name cache,
#                                    with the warp read path run through device/cpu/launcher.cpp
#                                    (-DGVFS_TSAN_SELFTEST_PT; links libffi)
# (what the two share, tests/native/tsan_common.h, is included by both), and a third for the
# host's native reader pool:
#   tests/native/tsan_readers.c      gpuvfs/hostcall/readers.c (-DRP_TSAN_SELFTEST, and
#                                    -DRP_ANSWER_ORDER=memory_order_relaxed; built with CC)
# Then, for each harness:
#   1. runs it over several shapes (lanes/servers; pool sets x ways, readahead, fills pushed
#      by the host or not); every run must finish with exit 0, all checks passed and no TSan
#      report;
#   2. runs each broken variant briefly; each must FAIL with a TSan data-race report, which
#      proves the harness can see a missing happens-before edge at all (the page table's
#      variants twice: with every cache fill pulled from the lane buffer, and with every one
#      a FILL_PUSH, whose bytes the device copies into the slots from the lane's stage).
# Exits non-zero on any TSan report, failed check, or self-test that was not caught.
# Environment: CXX (default g++), TSAN_ITERS (hostcall calls per device thread, default 4000),
# TSAN_PT_ITERS (page-cache reads per device thread, default 1500).
set -euo pipefail
cd "$(dirname "$0")/../.."

CXX=${CXX:-g++}
CC=${CC:-gcc}
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

# One run of a harness that must come out clean: run_clean LABEL LOG KEY CMD... (300 s at
# most). Fails unless it exits 0 with no TSan report and prints its summary line (the line
# that starts with KEY=); leaves that line in $summary and the TSan reports in $n_reports.
run_clean() {
  local label=$1 log=$2 key=$3 rc
  shift 3
  set +e
  timeout 300 "$@" >"$log" 2>&1
  rc=$?
  set -e
  n_reports=$(grep -c 'WARNING: ThreadSanitizer' "$log" || true)
  if [ "$rc" -ne 0 ] || [ "$n_reports" -ne 0 ]; then
    cat "$log" >&2
    fail "$label: exit $rc, $n_reports TSan reports (log: $log)"
  fi
  summary=$(grep "^$key=" "$log" || true)
  [ -n "$summary" ] || { cat "$log" >&2; fail "no summary line from $label"; }
}

# The number in a summary line's KEY=N field: field KEY LINE.
field() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<" $2"; }

# Self-tests: each broken variant must be caught by TSan (a non-zero exit with a data-race
# report). must_catch WHAT BROKEN LOGPREFIX BIN MODE... -- ARGS...: for each MODE, `caught`
# runs BIN --selftest=MODE ARGS...; WHAT and BROKEN name the self-test and the breakage in
# the failure. Leaves the count caught in $n_caught.
must_catch() {
  local what=$1 broken=$2 prefix=$3 bin=$4 mode log
  local -a modes=() args=()
  shift 4
  while [ "$1" != -- ]; do modes+=("$1"); shift; done
  shift
  args=("$@")
  n_caught=0
  for mode in "${modes[@]}"; do
    log="$prefix-$mode.log"
    if ! caught "$log" "$bin" --selftest="$mode" "${args[@]}"; then
      cat "$log" >&2
      fail "$what '$mode' ($broken) was NOT caught by TSan in 3 runs (last log: $log)"
    fi
    n_caught=$((n_caught + 1))
  done
}

# The six builds in parallel (2 cores in CI): build WHAT LOG CXX-ARGS... starts one in the
# background; wait_builds waits for all of them and fails with WHAT and the log of any that failed.
build_pids=()
build_logs=()
build_whats=()
build() {   # C++ with FLAGS
  local what=$1 log=$2
  shift 2
  build_cmd "$what" "$log" "$CXX" "${FLAGS[@]}" "$@"
}
build_c() {   # C
  local what=$1 log=$2
  shift 2
  build_cmd "$what" "$log" "$CC" -std=c11 -O1 -g -fsanitize=thread -pthread -Wall "$@" -ldl
}
build_cmd() {
  local what=$1 log=$2
  shift 2
  "$@" 2>"$log" &
  build_pids+=($!)
  build_logs+=("$log")
  build_whats+=("$what")
}
wait_builds() {
  local k
  for k in "${!build_pids[@]}"; do
    wait "${build_pids[k]}" || { cat "${build_logs[k]}" >&2; fail "could not build ${build_whats[k]}"; }
  done
}
build "the harness with $CXX -fsanitize=thread" "$BUILD/build.log" \
  tests/native/tsan_hostcall.cpp -o "$BUILD/tsan_hostcall"
build "the self-test harness" "$BUILD/build-selftest.log" \
  -DGVFS_TSAN_SELFTEST tests/native/tsan_hostcall.cpp -o "$BUILD/tsan_hostcall_selftest"
build "the page-table harness (needs libffi)" "$BUILD/build-pt.log" \
  tests/native/tsan_pagetable.cpp -o "$BUILD/tsan_pagetable" -lffi
build "the page-table self-test harness" "$BUILD/build-pt-selftest.log" \
  -DGVFS_TSAN_SELFTEST_PT tests/native/tsan_pagetable.cpp -o "$BUILD/tsan_pagetable_selftest" -lffi
build_c "the reader-pool harness with $CC" "$BUILD/build-readers.log" \
  tests/native/tsan_readers.c -o "$BUILD/tsan_readers"
build_c "the reader-pool self-test harness" "$BUILD/build-readers-selftest.log" \
  -DRP_TSAN_SELFTEST tests/native/tsan_readers.c -o "$BUILD/tsan_readers_selftest"
build_c "the reader-pool self-test harness (answers without release)" "$BUILD/build-readers-selftest-answer.log" \
  -DRP_ANSWER_ORDER=memory_order_relaxed tests/native/tsan_readers.c -o "$BUILD/tsan_readers_selftest_answer"
wait_builds

t_build=$SECONDS
total=0
reports=0
run=0
# lanes servers threads: few lanes so they are contended (1 lane: every call fights for it).
for shape in "4 1 16" "8 2 16" "1 1 16" "16 4 16"; do
  read -r lanes servers threads <<<"$shape"
  run=$((run + 1))
  run_clean "hostcall lanes=$lanes servers=$servers threads=$threads" "$BUILD/run-$run.log" requests \
    "$BUILD/tsan_hostcall" --lanes="$lanes" --servers="$servers" --threads="$threads" --iters="$ITERS" --seed="$run"
  reports=$((reports + n_reports))
  total=$((total + $(field requests "$summary")))
done

hostcall_modes=(relaxed early submit unlock claim)
must_catch "self-test" "a deliberately racy protocol" "$BUILD/selftest" "$BUILD/tsan_hostcall_selftest" \
  "${hostcall_modes[@]}" -- --lanes=2 --threads=4 --iters=300
caught=$n_caught

t_hostcall=$SECONDS
hostcall_summary="tsan: hostcall: $total requests, $reports reports ($run lane/server shapes); self-test: $caught/${#hostcall_modes[@]} injected races caught ($((t_hostcall - t_build)) s)"

# ---- the page table, file cache, fd table and name cache
# sets ways lanes servers readahead warps push: a pool of 32 slots of 256 bytes (the files
# hold ~150 pages), few ways (FULL sets), no readahead (then the same-range rounds fit 4
# ways). push: ctx.fill_push_bytes, the smallest cache fill the host also copies into the
# lane's stage in device memory (FILL_PUSH; the device copies on from there, and the
# stand-in poisons the lane buffer) - 0: never (no stage), 1: every one, 700: runs of 3
# pages or more (a warp batch then mixes pushed and pulled runs).
reads=0
fills=0
pushed=0
lookups=0
pt_reports=0
pt_run=0
for shape in "4 8 4 1 3 2 0" "2 16 8 2 7 2 0" "8 4 3 1 0 1 0" "4 8 4 1 3 2 1" "2 16 8 2 7 2 700"; do
  read -r sets ways lanes servers ra warps push <<<"$shape"
  pt_run=$((pt_run + 1))
  label="pagetable pool=${sets}x$ways lanes=$lanes servers=$servers ra=$ra warps=$warps push=$push"
  run_clean "$label" "$BUILD/pt-run-$pt_run.log" reads "$BUILD/tsan_pagetable" --sets="$sets" --ways="$ways" \
    --lanes="$lanes" --servers="$servers" --ra="$ra" --warps="$warps" --push="$push" --iters="$PT_ITERS" --seed="$pt_run"
  pt_reports=$((pt_reports + n_reports))
  reads=$((reads + $(field reads "$summary")))
  fills=$((fills + $(field fills "$summary")))
  lookups=$((lookups + $(field lookups "$summary")))
  # The push path was taken exactly when asked for (the harness checks its counts too).
  n_pushed=$(field pushed "$summary")
  if [ "$push" -eq 0 ] && [ "$n_pushed" -ne 0 ]; then fail "$label: $n_pushed fills pushed"; fi
  if [ "$push" -ne 0 ] && [ "$n_pushed" -eq 0 ]; then fail "$label: no fill pushed"; fi
  pushed=$((pushed + n_pushed))
done

pt_modes=(relaxed wait unpin)
must_catch "page-table self-test" "a deliberately racy page table" "$BUILD/pt-selftest" \
  "$BUILD/tsan_pagetable_selftest" "${pt_modes[@]}" -- --iters=300 --rounds=8 --witers=10
pt_caught=$n_caught
must_catch "page-table self-test with pushed fills" "a deliberately racy page table" "$BUILD/pt-selftest-push" \
  "$BUILD/tsan_pagetable_selftest" "${pt_modes[@]}" -- --iters=300 --rounds=8 --witers=10 --push=1
pt_caught=$((pt_caught + n_caught))

# ---- the host's native reader pool: readers x capacity (1 x 1: every job waits its turn) x
# pushed (1: the cpu backend's FILL_PUSH, each job's bytes also copied to a second buffer; 2:
# the cuda push path with a stand-in driver) x % of copies and event records made to fail x
# answers (1: the main thread's jobs answer themselves into words it polls as the device would)
t_pt=$SECONDS
rp_jobs=0
rp_answered=0
rp_run=0
for shape in "8 24 0 0 0" "3 5 1 0 0" "1 1 0 0 0" "16 64 1 0 0" "8 24 2 0 0" "3 5 2 3 0" "8 24 0 0 1" "2 3 0 0 1"; do
  read -r rthreads rcap rpush rfail ranswer <<<"$shape"
  rp_run=$((rp_run + 1))
  run_clean "readers threads=$rthreads cap=$rcap push=$rpush fail=$rfail answer=$ranswer" \
    "$BUILD/readers-run-$rp_run.log" jobs \
    "$BUILD/tsan_readers" --threads="$rthreads" --cap="$rcap" --push="$rpush" --fail="$rfail" --jobs=20000 \
    --answer="$ranswer" --seed="$rp_run"
  rp_jobs=$((rp_jobs + $(field jobs "$summary") + $(field side "$summary")))
  rp_answered=$((rp_answered + $(field answered "$summary")))
done
caught "$BUILD/readers-selftest.log" "$BUILD/tsan_readers_selftest" --jobs=2000 ||
  { cat "$BUILD/readers-selftest.log" >&2; fail "the reader pool's self-test (reap without the lock) was NOT caught by TSan in 3 runs"; }
caught "$BUILD/readers-selftest-answer.log" "$BUILD/tsan_readers_selftest_answer" --jobs=2000 --answer=1 ||
  { cat "$BUILD/readers-selftest-answer.log" >&2; fail "the reader pool's self-test (an answer stored without its release) was NOT caught by TSan in 3 runs"; }

echo "$hostcall_summary"
echo "tsan: pagetable: $reads reads, $fills fills ($pushed pushed), $lookups lookups, $pt_reports reports ($pt_run pool shapes); self-test: $pt_caught/$((2 * ${#pt_modes[@]})) injected races caught ($((t_pt - t_hostcall)) s; builds $t_build s)"
echo "tsan: readers: $rp_jobs jobs ($rp_answered answered by their readers), 0 reports ($rp_run shapes); self-test: 2/2 injected races caught ($((SECONDS - t_pt)) s)"
