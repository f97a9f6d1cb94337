#!/usr/bin/env bash
# GPU check on a bare CUDA machine that has python3 with torch and triton, sized to the device
# budget: every step has a timeout, the timeouts add up to 400 s (about 6 minutes on one H200),
# and the steps run most important first, so a cut-short session still has the first results.
#
#   bash bench/gpu_check.sh                    # results in $OUT if set, else ./gpu_check_out
#   GPU_CHECK_CPU=1 bash bench/gpu_check.sh    # dry run on the CPU: Triton interpreter, tiny sizes,
#                                              # timeouts x3 (GPU_CHECK_TIMEOUT_SCALE)
#
# step (timeout s)                                                           -> file in $OUT
#  0 install   (40)  the package, editable, offline first; else PYTHONPATH       env.txt
#  1 kernels   (75)  tests/test_kernels.py compiled (interpreted in a dry run)   pytest.log, junit.xml
#  2 eval      (45)  Triton node-evals/s, 100,000 programs x 10,000 rows         eval.json
#  3 fitness   (45)  fitness vs evaluation time at pop 100,000 (18 x 712 rows,   fitness.json
#                    Kendall/Spearman per backend); Kendall backends by task length
#  4 generations (140) bench/generation_profile.py, one warm process, all Suite-Zero tasks:
#                    launches/syncs at pop 1,000, then the targets pop 1,000 x 50 (< 1 s),
#                    100,000 x 10 (< 1.5 s), 1,000,000 x 3 (< 4 s), 31 x 1,000 x 100 (< 5 s),
#                    progress read every SYNC_EVERY (10) generations, the sync-free objective
#                    (RankObjective(sync_free=True): no deduplication), each generation one
#                    replayed CUDA graph (cuda_graph; eager if capture fails)  generation_profile.json
#  5 device    (45)  bench/device_check.py: CPU = CUDA breeding, graph replay, same seed, resume,
#                    sync_every, whole-generation graph = eager                  device_check.json
#  6 summary   (10)  every step's status and wall time, headline figures         summary.json
# Exit status: non-zero if any step failed or timed out (later steps still run).
# Not here any more (each one alone exceeds the budget): python -m bench.gpu (the full benchmark
# tables), python -m bench.zc_gpu (live proxies); set GPU_CHECK_EXTRA=1 to run them afterwards.
set -uo pipefail
cd "$(dirname "$0")/.."
DIR="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$DIR"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
CPU="${GPU_CHECK_CPU:-0}"
if [ "$CPU" = 1 ]; then export TRITON_INTERPRET=1; DRY="--dry-run"; else unset TRITON_INTERPRET; DRY=""; fi
# a dry run on a shared CPU gets 3x the timeouts (the budget is the GPU's)
TSCALE="${GPU_CHECK_TIMEOUT_SCALE:-$([ "$CPU" = 1 ] && echo 3 || echo 1)}"
fail=0
: >"$DIR/steps.tsv"

# run NAME TIMEOUT CMD...: logs to $DIR/NAME.log, records "NAME rc wall timeout" in steps.tsv
run() {
  local name=$1 limit=$(( $2 * TSCALE )); shift 2
  echo "== [$name] (timeout ${limit} s) $*"
  local t0; t0=$(date +%s%N)
  timeout --kill-after=5 "$limit" "$@" 2>&1 | tee "$DIR/$name.log"
  local rc=${PIPESTATUS[0]}
  local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  printf '%s\t%s\t%d.%03d\t%s\n' "$name" "$rc" $((ms / 1000)) $((ms % 1000)) "$limit" >>"$DIR/steps.tsv"
  [ "$rc" -eq 0 ] || { echo "== [$name] failed (rc=$rc)"; fail=1; }
}

{
  date -u
  timeout 10 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || echo "nvidia-smi: none"
  "$PY" --version
  "$PY" -c 'import torch, triton; print("torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__)' 2>&1
} >"$DIR/env.txt" 2>&1
cat "$DIR/env.txt"
if ! "$PY" -c 'import torch, triton' 2>/dev/null; then
  echo "python3 lacks torch or triton: nothing to check here (install them first; not in the budget)"
  exit 1
fi
if [ "$CPU" != 1 ] && ! "$PY" -c 'import torch; assert torch.cuda.is_available()'; then
  echo "torch sees no CUDA device: nothing to check here (GPU_CHECK_CPU=1 for a dry run)" | tee -a "$DIR/env.txt"
  exit 1
fi

install() {
  "$PY" -c 'import tensorgp.kernels.eval_kernel' 2>/dev/null && return 0
  pipi() { "$PY" -m pip install -q --disable-pip-version-check --no-build-isolation "$@"; }
  pipi --no-index -e ".[dev]" || pipi --no-index --no-deps -e . || pipi -e ".[dev]"
}
export -f install
export PY
run install 40 bash -c install
if ! "$PY" -c 'import tensorgp.kernels.eval_kernel' 2>/dev/null; then
  echo "editable install failed: PYTHONPATH=$PWD (tests import kernels/ from the checkout)"
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

run kernels 75 "$PY" -m pytest -q -p no:cacheprovider tests/test_kernels.py --junitxml="$DIR/junit.xml"
run eval 45 "$PY" bench/gpu_steps.py eval --out "$DIR" $DRY
run fitness 45 "$PY" bench/gpu_steps.py fitness --out "$DIR" $DRY

DATA_DIR="${DATA:-}"
[ -z "$DATA_DIR" ] && for d in ../shared/data/suite-zero shared/data/suite-zero "${TENSORGP_DATA:-}"; do
  [ -n "$d" ] && [ -d "$d" ] && { DATA_DIR="$d"; break; }
done
if [ -n "$DATA_DIR" ]; then
  if [ "$CPU" = 1 ]; then
    PROFILE_ARGS="--device cpu --pops 100 --gens 1 --variations device --targets --target-scale 0.01 --sync-free --cuda-graph"
  else
    PROFILE_ARGS="--device cuda --pops 1000 --gens 2 --variations compiled,device --targets --sync-free --cuda-graph"
  fi
  run generations 140 "$PY" bench/generation_profile.py --data "$DATA_DIR" --out "$DIR" $PROFILE_ARGS \
    --sync-every "${SYNC_EVERY:-10}"
else
  echo "== [generations] skipped: no Suite-Zero data (set DATA=dir)"
  printf 'generations\t3\t0\t140\n' >>"$DIR/steps.tsv"
  fail=1
fi

CPUFLAG=""; [ "$CPU" = 1 ] && CPUFLAG="--cpu"
run device 45 "$PY" bench/device_check.py --out "$DIR" $CPUFLAG
run summary 10 "$PY" bench/gpu_steps.py summary --out "$DIR" $DRY

if [ "${GPU_CHECK_EXTRA:-0}" = 1 ]; then  # outside the budget
  "$PY" -m bench.gpu --out "$DIR" $DRY 2>&1 | tee "$DIR/bench_gpu.log"
  [ -f bench/zc_gpu.py ] && "$PY" -m bench.zc_gpu --out "$DIR" $DRY 2>&1 | tee "$DIR/zc_gpu.log"
fi
echo "== gpu_check done (fail=$fail); results in $DIR (summary.json)"
exit $fail
