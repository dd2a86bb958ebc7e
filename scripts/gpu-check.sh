#!/usr/bin/env bash
# gpu-check: the one command to run on the GPU host (make gpu-check). No network needed.
#
#   bash scripts/gpu-check.sh [--sanitize] [--no-tests] [--no-bench]
#
# 1. installs the offline bundle if .bundle/ is there (scripts/make-bundle.sh builds it;
#    carry it: it is ignored by git) and any carried wheels in .whl/;
# 2. prints the GPU, the driver and the versions of what the checks use;
# 3. runs the gpu test suite:   python3 -m pytest -q -m gpu tests
# 4. runs every benchmarks/*_bench.py in quick mode on the cuda backend, JSON to $OUT_DIR;
# 5. with GPUVFS_SANITIZE=1 (or --sanitize): the gpu cache tests once under
#    compute-sanitizer --tool memcheck and once under --tool racecheck (with the device
#    defines for checkers in GPUVFS_DEVICE_DEFINES, see gpuvfs/backends/base.py);
# 6. prints a short summary (the last lines of the output): steps, then every figure.
#
# Logs and results go to ${OUT:-.gpu-out}/: gpu-check.log (everything), <bench>.json,
# sanitize-memcheck.log, sanitize-racecheck.log. Exit status: 0 when every step ran and
# passed (a benchmark that misses a goal still passes unless GPUVFS_STRICT=1), else 1.
# Uses the machine's python3 (CuPy, NumPy, pytest preinstalled); gpuvfs from this checkout
# through PYTHONPATH, so nothing is built or fetched. GPUVFS_CHECK_BACKEND=cpu runs the same
# steps on the cpu backend (a smoke test of this script on a machine without a GPU).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT_DIR=${OUT:-$ROOT/.gpu-out}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
LOG=$OUT_DIR/gpu-check.log
BACKEND=${GPUVFS_CHECK_BACKEND:-cuda}
SANITIZE=${GPUVFS_SANITIZE:-0}
RUN_TESTS=1
RUN_BENCH=1
for a in "$@"; do
  case "$a" in
    --sanitize) SANITIZE=1 ;;
    --no-tests) RUN_TESTS=0 ;;
    --no-bench) RUN_BENCH=0 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "gpu-check: unknown argument $a" >&2; exit 2 ;;
  esac
done
TEST_TIMEOUT=${GPUVFS_TEST_TIMEOUT:-300}     # seconds for the whole gpu suite
BENCH_TIMEOUT=${GPUVFS_BENCH_TIMEOUT:-180}   # seconds for each quick benchmark
SAN_TIMEOUT=${GPUVFS_SANITIZE_TIMEOUT:-240}  # seconds for each sanitizer run
export PYTHONUNBUFFERED=1
export PYTHONDONTWRITEBYTECODE=1
# A fresh kernel cache: CuPy keys its cache by the source text, not by included headers.
export CUPY_CACHE_DIR=${CUPY_CACHE_DIR:-/tmp/gpuvfs-cupy-cache-$$}

STEPS=()      # "name|status|seconds"
FAILED=0
step() {  # step NAME COMMAND...: runs it, records status and time
  local name=$1; shift
  local t0=$SECONDS rc
  echo
  echo "=== $name: $*"
  "$@"
  rc=$?
  local st="ok"
  [ $rc -eq 0 ] || { st="FAILED (exit $rc)"; [ $rc -eq 124 ] && st="TIMED OUT"; FAILED=1; }
  STEPS+=("$name|$st|$((SECONDS - t0))")
  echo "=== $name: $st in $((SECONDS - t0)) s"
  return 0
}

install_bundle() {
  if [ -f .bundle/install-bundle.sh ]; then
    # install-bundle.sh is meant to be sourced (it exports PYTHONPATH, LD_LIBRARY_PATH, PATH)
    # but sets -eu: source it in a child shell and take the three variables back.
    local envs
    if envs=$(bash -c 'source .bundle/install-bundle.sh .bundle >&2 &&
                       printf "export PYTHONPATH=%q\nexport LD_LIBRARY_PATH=%q\nexport PATH=%q\n" \
                         "${PYTHONPATH:-}" "${LD_LIBRARY_PATH:-}" "$PATH"'); then
      eval "$envs"
      echo "offline bundle installed (pyfuse3, lmdb, trio, kvikio under /tmp/gpuvfs-env)"
    else
      echo "gpu-check: WARNING: installing the offline bundle failed; going on without what it failed to install"
      [ -d /tmp/gpuvfs-env/site ] && export PYTHONPATH=/tmp/gpuvfs-env/site${PYTHONPATH:+:$PYTHONPATH}
      [ -d /tmp/gpuvfs-env/root/lib/x86_64-linux-gnu ] && \
        export LD_LIBRARY_PATH=/tmp/gpuvfs-env/root/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
      return 1
    fi
  else
    echo "no .bundle/ here (carry it to get pyfuse3, lmdb, trio and kvikio): skipped"
  fi
  if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/gpuvfs-whl .whl/*.whl || return 1
    export PYTHONPATH=/tmp/gpuvfs-whl${PYTHONPATH:+:$PYTHONPATH}
    echo "carried wheels installed: $(ls .whl | tr '\n' ' ')"
  fi
  return 0
}

versions() {
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi -L
    nvidia-smi --query-gpu=name,driver_version,memory.total,pcie.link.gen.current,pcie.link.width.current \
      --format=csv,noheader 2>/dev/null || true
  else
    echo "nvidia-smi: not found"
  fi
  echo "checkout: $(git rev-parse --short HEAD 2>/dev/null || echo 'no git here')"
  echo "host: $(uname -srm), $(nproc) cores"
  python3 - <<'EOF'
import sys, importlib
print("python3:", sys.executable, sys.version.split()[0])
for m in ("numpy", "cupy", "pytest", "hypothesis", "gpuvfs", "lmdb", "trio", "pyfuse3", "kvikio"):
    try:
        mod = importlib.import_module(m)
        print(f"  {m}: {getattr(mod, '__version__', '?')}")
    except Exception as e:
        print(f"  {m}: not importable ({type(e).__name__}: {str(e)[:80]})")
try:
    import cupy
    rt = cupy.cuda.runtime
    print(f"  CUDA runtime {rt.runtimeGetVersion()}, driver {rt.driverGetVersion()}, devices {rt.getDeviceCount()}")
    p = rt.getDeviceProperties(0)
    print(f"  device 0: {p['name'].decode() if isinstance(p['name'], bytes) else p['name']}, "
          f"sm_{p['major']}{p['minor']}, {p['multiProcessorCount']} SMs")
except Exception as e:
    print(f"  cupy/CUDA: {type(e).__name__}: {e}")
EOF
  command -v g++ >/dev/null && echo "g++: $(g++ --version | head -1)"
  local cs; cs=$(find_sanitizer) && echo "compute-sanitizer: $cs ($("$cs" --version 2>/dev/null | tail -1))"
  return 0
}

find_sanitizer() {
  local c
  for c in "$(command -v compute-sanitizer 2>/dev/null)" /usr/local/cuda/bin/compute-sanitizer \
           /usr/local/cuda*/bin/compute-sanitizer /opt/nvidia/*/compute-sanitizer/compute-sanitizer; do
    [ -n "$c" ] && [ -x "$c" ] && { echo "$c"; return 0; }
  done
  return 1
}

gpu_tests() {
  timeout "$TEST_TIMEOUT" python3 -m pytest -q -rfE -p no:cacheprovider -m gpu tests
  local rc=$?
  [ $rc -eq 5 ] && { echo "(no gpu tests were collected)"; return 0; }
  return $rc
}

bench() {  # bench FILE
  local f=$1 name; name=$(basename "$f" .py)
  local strict=(); [ "${GPUVFS_STRICT:-0}" = 1 ] && strict=(--strict)
  rm -f "$OUT_DIR/$name.json"
  # the benchmark's own watchdog fires first and prints every thread's stack
  timeout "$BENCH_TIMEOUT" python3 "$f" --quick --backend "$BACKEND" --json "$OUT_DIR/$name.json" \
    --timeout $((BENCH_TIMEOUT > 30 ? BENCH_TIMEOUT - 15 : BENCH_TIMEOUT)) "${strict[@]}"
}

sanitize() {  # sanitize TOOL
  local tool=$1 cs files
  cs=$(find_sanitizer) || { echo "compute-sanitizer not found: skipped"; return 0; }
  files=$(ls tests/test_cache*.py 2>/dev/null | tr '\n' ' ')
  [ -n "$files" ] || { echo "no tests/test_cache*.py yet: skipped"; return 0; }
  local log=$OUT_DIR/sanitize-$tool.log
  # --error-exitcode: a finding fails the step even when the tests themselves pass.
  # Device defines for checkers (gpuvfs/backends/base.py, env_defines): paths read a byte
  # at a time up to their NUL (memcheck), and for racecheck no shared staging buffer, whose
  # holders an atomic lock orders (racecheck only knows barriers).
  local defs="GVFS_PATH_EXACT_READS"
  [ "$tool" = racecheck ] && defs="$defs GVFS_STAGE_BYTES=0"
  GPUVFS_DEVICE_DEFINES="$defs" timeout "$SAN_TIMEOUT" "$cs" --tool "$tool" --error-exitcode 86 --print-limit 50 \
    python3 -m pytest -q -x -rfE -p no:cacheprovider -m gpu $files >"$log" 2>&1
  local rc=$?
  tail -n 15 "$log"
  [ $rc -eq 86 ] && echo "compute-sanitizer $tool reported errors: see $log"
  return $rc
}

summary() {
  echo
  echo "==================== gpu-check summary ===================="
  local s
  for s in "${STEPS[@]}"; do
    IFS='|' read -r n st t <<<"$s"
    printf '  %-34s %-18s %5s s\n' "$n" "$st" "$t"
  done
  python3 - "$OUT_DIR" <<'EOF'
import glob, json, os, sys
for p in sorted(glob.glob(os.path.join(sys.argv[1], "*_bench.json"))):
    try:
        d = json.load(open(p))
    except Exception as e:
        print(f"  {os.path.basename(p)}: unreadable ({e})"); continue
    dev = d.get("machine", {}).get("device", "?")
    print(f"  {d.get('benchmark', p)} [{d.get('backend')}, {dev}]" + ("" if d.get("checks_ok", True) else "  CHECKS FAILED"))
    for f in d.get("figures", []):
        r = f.get("ratio"); ok = f.get("pass")
        fl = f.get("floor")
        print(f"    {f['name'][:52]:<52} {f['value']:>10.4g} {f['unit']:<4}"
              + (f" floor {fl:>9.4g}" if fl is not None else " " * 16)
              + (f" {r:>6.2f}x" if r is not None else " " * 8)
              + (f"  {f['goal']}: {'PASS' if ok else 'FAIL'}" if f.get("goal") else ""))
    for x in d.get("problems", [])[:3]:
        print(f"    problem: {x}")
EOF
  echo "logs and results: $OUT_DIR ($(ls "$OUT_DIR" | tr '\n' ' '))"
  [ $FAILED -eq 0 ] && echo "gpu-check: all steps ran and passed" || echo "gpu-check: SOME STEPS FAILED (see above)"
}

main() {
  echo "gpu-check $(date -u +%Y-%m-%dT%H:%M:%SZ) in $ROOT, backend $BACKEND, results in $OUT_DIR"
  step "install offline bundle" install_bundle
  export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
  step "versions" versions
  [ $RUN_TESTS = 1 ] && step "gpu tests (pytest -m gpu)" gpu_tests
  if [ $RUN_BENCH = 1 ]; then
    local f
    for f in benchmarks/*_bench.py; do
      [ -f "$f" ] && step "bench $(basename "$f" .py)" bench "$f"
    done
  fi
  if [ "$SANITIZE" = 1 ]; then
    step "memcheck (gpu cache tests)" sanitize memcheck
    step "racecheck (gpu cache tests)" sanitize racecheck
  fi
  summary
  return $FAILED
}

main 2>&1 | tee "$LOG"
exit "${PIPESTATUS[0]}"
