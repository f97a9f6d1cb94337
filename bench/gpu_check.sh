#!/usr/bin/env bash
# GPU check of the Triton kernels, on a bare CUDA machine that has python3 (network optional).
#
#   bash bench/gpu_check.sh        # results in $OUT if set, else ./gpu_check_out
#
# 1. records the environment; installs torch only if python3 has none (TORCH=torch==X.Y.Z to pin)
# 2. installs the package (editable, offline first: --no-index --no-build-isolation)
# 3. runs tests/test_kernels.py compiled (TRITON_INTERPRET unset) -> pytest.log, junit.xml
# 4. smoke: evaluate_triton vs evaluate_torch on GPU at realistic sizes (agreement + timings),
#    kendall_tau_b_triton vs scipy on a few rows (+ timing) -> smoke.json
# 5. python -m bench.gpu --out DIR if bench/gpu.py exists -> bench_gpu.log, bench_gpu.json
#    (Triton 100,000 programs x 10,000 rows vs the 1e11 node-evals/s target, fitness, generations)
# 6. bench/device_check.py: the device generation path (variation="device") on CUDA equals the CPU,
#    CUDA-graph replay equals eager breeding, same seed -> same run, resume -> same run -> device_check.json
# 7. bench/generation_profile.py: per-generation launches, syncs and eval/fitness/variation split at
#    pops 1,000 / 10,000 / 100,000 (compiled vs device), then the issue-16 targets on all Suite-Zero
#    tasks (pop 1,000 x 50 < 1 s, 31 x 1,000 x 100 < 5 s, 100,000 x 10 < 1.5 s, 1,000,000 x 3 < 4 s)
#    -> generation_profile.log, generation_profile.json (needs the data: DATA=dir or ../shared/data)
# 8. python -m bench.zc_gpu --out DIR: live zero-cost proxies, all 13 for 1,000 NB201 archs at batch 64
#    (target < 60 s), the cheap set, GPU vs CPU agreement -> zc_gpu.log, zc_gpu.json
# Exit status: non-zero if any step failed (later steps still run).
# GPU_CHECK_CPU=1: dry run of this script on a CPU-only machine (Triton interpreter, tiny sizes, no pytest;
#   bench.gpu --dry-run).
set -uo pipefail
cd "$(dirname "$0")/.."
DIR="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$DIR"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
fail=0
if [ "${GPU_CHECK_CPU:-0}" = 1 ]; then export TRITON_INTERPRET=1; else unset TRITON_INTERPRET; fi

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || echo "nvidia-smi failed"
  "$PY" --version
} >"$DIR/env.txt" 2>&1

if ! "$PY" -c 'import torch' 2>/dev/null; then
  echo "== installing ${TORCH:-torch}"
  "$PY" -m pip install -q "${TORCH:-torch}" || { echo "torch install failed"; exit 1; }
fi
"$PY" -c 'import torch, triton; print("torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__)' >>"$DIR/env.txt" 2>&1
if [ "${GPU_CHECK_CPU:-0}" != 1 ] && ! "$PY" -c 'import torch; assert torch.cuda.is_available()'; then
  echo "torch sees no CUDA device: nothing to check here" | tee -a "$DIR/env.txt"
  exit 1
fi

if ! "$PY" -c 'import tensorgp.kernels.eval_kernel' 2>/dev/null; then
  echo "== installing the package"
  pipi() { "$PY" -m pip install -q --disable-pip-version-check --no-build-isolation "$@"; }
  pipi --no-index -e ".[dev]" || pipi -e ".[dev]" || pipi --no-index --no-deps -e . || {
    echo "editable install failed: falling back to PYTHONPATH (tests import kernels/ from the checkout)"
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  }
fi
cat "$DIR/env.txt"

if [ "${GPU_CHECK_CPU:-0}" != 1 ]; then
  echo "== tests/test_kernels.py (compiled)"
  timeout 300 "$PY" -m pytest -q -p no:cacheprovider tests/test_kernels.py --junitxml="$DIR/junit.xml" 2>&1 | tee "$DIR/pytest.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || fail=1
fi

echo "== smoke"
timeout 240 "$PY" - "$DIR/smoke.json" <<'EOF' || fail=1
import json, os, statistics, sys, time

import numpy as np
import torch
import triton

from tensorgp.engine.evaluate import evaluate_torch
from tensorgp.kernels.eval_kernel import evaluate_triton, max_stack_depth
from tensorgp.kernels.kendall_kernel import kendall_tau_b_triton
from tensorgp.engine.population import init_population
from tensorgp.engine.primitives import DEFAULT_FUNCTIONS, PrimitiveSet

CPU = os.environ.get("GPU_CHECK_CPU") == "1"  # dry run: interpreter, tiny sizes
dev = torch.device("cpu" if CPU else "cuda")
res = {"device": "cpu (dry run)" if CPU else torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__, "eval": [], "kendall": {}}


def sync():
    if not CPU:
        torch.cuda.synchronize()


def timed(fn, reps=7):
    fn()
    sync()
    ts = []
    for _ in range(1 if CPU else reps):
        t = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


P, m = (12, 10) if CPU else (1000, 10)
pred_for_kendall = None
for case, funcs, N in [("arith", ("add", "sub", "mul", "div"), 5000), ("all14", DEFAULT_FUNCTIONS, 7800),
                       ("all14_100k", DEFAULT_FUNCTIONS, 100_000)][: 2 if CPU else 3]:
    N = 100 if CPU else N
    pset = PrimitiveSet(tuple(f"x{i}" for i in range(m)), functions=funcs)
    pop = init_population(P, pset, torch.Generator().manual_seed(0), max_len=128, depth_range=(1, 6)).trimmed().to(dev)
    X = torch.randn(N, m, generator=torch.Generator(device=dev).manual_seed(1), device=dev)
    X[::97, 0] = float("nan")  # failed proxies
    args = (pop.ops, pop.consts, pop.length, X)
    S = max_stack_depth(pop.ops)
    ref = evaluate_torch(*args)
    got = evaluate_triton(*args, max_stack=S)
    both_nan = ref.isnan() & got.isnan()
    row = {"case": case, "P": P, "N": N, "L": pop.max_len, "max_stack": S, "nodes": pop.n_nodes(),
           "frac_bit_equal": float(((got == ref) | both_nan).float().mean()),
           "frac_close_1e-5": float(torch.isclose(got, ref, rtol=1e-5, atol=1e-6, equal_nan=True).float().mean()),
           "nan_pattern_mismatch": int((ref.isnan() != got.isnan()).sum())}
    row["torch_s"] = timed(lambda: evaluate_torch(*args), reps=2)
    for bn, nw in [(128, 4), (256, 4), (256, 8), (512, 8)][: 1 if CPU else 4]:
        t = timed(lambda: evaluate_triton(*args, max_stack=S, block_n=bn, num_warps=nw))
        row[f"triton_s_bn{bn}_w{nw}"] = t
        row[f"node_evals_per_s_bn{bn}_w{nw}"] = pop.n_nodes() * N / t
    print(json.dumps(row))
    res["eval"].append(row)
    if case == "all14":
        pred_for_kendall = got

# Kendall: 3 NB201-sized tasks over the all14 predictions (NaN/inf included); fitness.py semantics
sizes = [30, 30, 40] if CPU else [2600, 2600, 2600]
off = torch.tensor(np.concatenate([[0], np.cumsum(sizes)]), device=dev)
pred = pred_for_kendall[:, : off[-1]].contiguous()
target = torch.rand(int(off[-1]), generator=torch.Generator(device=dev).manual_seed(2), device=dev).round(decimals=2)
tau = kendall_tau_b_triton(pred, target, off)
from scipy.stats import kendalltau
errs = []
for p in range(min(8, P)):
    for t in range(3):
        x = pred[p, off[t]:off[t + 1]].double().cpu().numpy()
        y = target[off[t]:off[t + 1]].double().cpu().numpy()
        x = np.where(np.isfinite(x), x, -np.inf)  # non-finite ranks lowest
        r = kendalltau(x, y, variant="b").statistic
        errs.append(abs(float(tau[p, t]) - (0.0 if np.isnan(r) else r)))
res["kendall"] = {"P": P, "sizes": sizes, "max_abs_err_vs_scipy_8_rows": max(errs),
                  "s": timed(lambda: kendall_tau_b_triton(pred, target, off)),
                  "s_block128": None if CPU else timed(lambda: kendall_tau_b_triton(pred, target, off, block=128))}
try:
    from tensorgp.engine.fitness import kendall_tau_b
    ft = kendall_tau_b(pred, target, off)
    res["kendall"]["max_abs_diff_vs_fitness"] = float((ft.float() - tau).abs().max())
    res["kendall"]["fitness_s"] = timed(lambda: kendall_tau_b(pred, target, off), reps=2)
except Exception as e:  # fitness.py absent or a different signature
    res["kendall"]["fitness"] = f"not compared: {e!r}"
print(json.dumps(res["kendall"]))
json.dump(res, open(sys.argv[1], "w"), indent=1)
EOF

if [ -f bench/gpu.py ]; then
  DRY=""; [ "${GPU_CHECK_CPU:-0}" = 1 ] && DRY="--dry-run"
  echo "== python -m bench.gpu --out $DIR $DRY"
  timeout 300 "$PY" -m bench.gpu --out "$DIR" $DRY 2>&1 | tee "$DIR/bench_gpu.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || fail=1
fi
echo "== bench/device_check.py"
CPUFLAG=""; [ "${GPU_CHECK_CPU:-0}" = 1 ] && CPUFLAG="--cpu"
timeout 300 "$PY" bench/device_check.py --out "$DIR" $CPUFLAG 2>&1 | tee "$DIR/device_check.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || fail=1

DATA_DIR="${DATA:-}"
[ -z "$DATA_DIR" ] && for d in ../shared/data/suite-zero ../shared/data "${TENSORGP_DATA:-}"; do
  [ -n "$d" ] && [ -d "$d" ] && { DATA_DIR="$d"; break; }
done
if [ -n "$DATA_DIR" ]; then
  if [ "${GPU_CHECK_CPU:-0}" = 1 ]; then
    PROFILE_ARGS="--device cpu --pops 100,1000 --gens 2"
  else
    PROFILE_ARGS="--device cuda --pops 1000,10000,100000 --gens 3 --targets"
  fi
  echo "== bench/generation_profile.py $PROFILE_ARGS"
  timeout 600 "$PY" bench/generation_profile.py --data "$DATA_DIR" --out "$DIR" $PROFILE_ARGS 2>&1 | tee "$DIR/generation_profile.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || fail=1
else
  echo "== generation_profile skipped: no Suite-Zero data (set DATA=dir)"
fi

if [ -f bench/zc_gpu.py ]; then
  DRY=""; [ "${GPU_CHECK_CPU:-0}" = 1 ] && DRY="--dry-run"
  echo "== python -m bench.zc_gpu --out $DIR $DRY (live proxies: all 13 for 1,000 NB201 archs at batch 64, target < 60 s)"
  timeout 420 "$PY" -m bench.zc_gpu --out "$DIR" $DRY 2>&1 | tee "$DIR/zc_gpu.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || fail=1
fi
echo "== gpu_check done (fail=$fail); results in $DIR"
exit $fail
