"""GPU check of the live proxies (called by bench/gpu_check.sh): all 13 proxies for 1,000 NB201
architectures at batch 64 on CUDA (target: under 60 s), packs of --pack architectures
(halved automatically on out-of-memory), after a warm-up pack; also the cheap set, and one
pack's values against the same architectures measured on the CPU (agreement).

    python -m bench.zc_gpu --out DIR            # on a CUDA machine
    python -m bench.zc_gpu --out DIR --dry-run  # CPU, tiny sizes: checks the script runs

The batch is random normal images with 10 balanced labels (the machine may lack scikit-learn;
the time does not depend on the pixel values)."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from tensorgp.nas.live_proxies import compute_archs
from tensorgp.nas.measures import CHEAP, NAMES
from tensorgp.nas.spaces import NB201


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="gpu_check_out")
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--pack", type=int, default=32)
    a = ap.parse_args()
    dry = a.dry_run
    dev = torch.device("cpu" if dry else "cuda")
    n, batch, pack = (4, 4, 2) if dry else (a.n, a.batch, a.pack)
    sp = NB201(channels=4, cells=1) if dry else NB201()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, generator=g)
    y = torch.arange(batch) % 10
    archs = [tuple(r) for r in sp.sample(n, g).tolist()]
    if not dry:
        torch.backends.cudnn.benchmark = False
    sync = (lambda: None) if dry else torch.cuda.synchronize
    res = {"device": "cpu (dry run)" if dry else torch.cuda.get_device_name(), "n": n, "batch": batch, "pack": pack,
           "torch": torch.__version__}
    compute_archs(sp, archs[:pack], x, y, NAMES, pack=pack, device=dev)  # warm-up (cuDNN, allocator)
    for label, names in (("all13", NAMES), ("cheap", CHEAP)):
        sync()
        t0 = time.perf_counter()
        tab = compute_archs(sp, archs, x, y, names, pack=pack, device=dev)
        sync()
        dt = time.perf_counter() - t0
        res[label] = {"s": dt, "archs_per_s": n / dt, "failures": len(tab.failures), "seconds_per_pass": tab.seconds,
                      "failure_examples": tab.failures[:3]}
        if label == "all13":
            res["all13"]["target_60s_met"] = dt < 60
        print(json.dumps({label: res[label]}), flush=True)
    k = min(4, n)
    gpu = compute_archs(sp, archs[:k], x, y, NAMES, pack=k, device=dev).values
    cpu = compute_archs(sp, archs[:k], x, y, NAMES, pack=k, device="cpu").values
    rel = ((gpu - cpu).abs() / cpu.abs().clamp(min=1e-6)).nan_to_num(0.0)
    res["agreement_vs_cpu_max_rel"] = {nm: float(rel[:, j].max()) for j, nm in enumerate(NAMES)}
    print(json.dumps({"agreement_vs_cpu_max_rel": res["agreement_vs_cpu_max_rel"]}))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "zc_gpu.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
