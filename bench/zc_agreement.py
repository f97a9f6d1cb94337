"""Target 2 of the live proxies: over N NB201 architectures of nb201-final (cifar10), Spearman
between tensorgp's live value and the table's value per proxy, and Kendall of each against the
table's cifar10 accuracy next to the table proxy's own Kendall.

    python bench/zc_agreement.py [--n 200] [--batch 16] [--names all] [--out FILE.json]

Batch: scikit-learn digits upsampled to 32x32x3 (CIFAR-10 is not downloadable here), so the
data-dependent proxies see other data than the tables'. Prints the load average."""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from scipy.stats import kendalltau, spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from zc_data import digits_batch  # noqa: E402

from tensorgp.nas.data import load  # noqa: E402
from tensorgp.nas.live_proxies import compute_archs  # noqa: E402
from tensorgp.nas.measures import DATA_FREE, parse_names  # noqa: E402
from tensorgp.nas.spaces import NB201  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/nb201-final/zc_nasbench201.json"))
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--pack", type=int, default=8)
    ap.add_argument("--names", default="all")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    task = [t for t in load(a.data) if t.name.endswith("cifar10")][0]
    g = torch.Generator().manual_seed(a.seed)
    rows = torch.randperm(len(task), generator=g)[: a.n].tolist()
    keys = [task.keys[i] for i in rows]
    x, y = digits_batch(a.batch, a.seed)
    names = parse_names(a.names)
    t0 = time.perf_counter()
    tab = compute_archs(NB201(), keys, x, y, names, pack=a.pack, seed=a.seed,
                        progress=lambda d, n: print(f"  {d}/{n} {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True))
    wall = time.perf_counter() - t0
    acc = task.accuracy[rows].double().numpy()
    out = {"n": a.n, "batch": a.batch, "pack": a.pack, "wall_s": wall, "seconds_per_pass": tab.seconds,
           "loadavg": open("/proc/loadavg").read().split()[:3], "failures": len(tab.failures), "proxies": {}}
    print(f"{'proxy':10s} {'spearman vs table':>18s} {'kendall(acc) ours':>18s} {'kendall(acc) table':>19s}")
    for j, n in enumerate(names):
        ours = tab.values[:, j].numpy()
        ref = task.column(n)[rows].double().numpy()
        ok = [i for i in range(len(rows)) if math.isfinite(ours[i]) and math.isfinite(ref[i])]
        sp = spearmanr(ours[ok], ref[ok]).statistic
        ko = kendalltau(ours[ok], acc[ok]).statistic
        kt = kendalltau(ref[ok], acc[ok]).statistic
        out["proxies"][n] = {"spearman_vs_table": sp, "kendall_ours": ko, "kendall_table": kt, "n": len(ok),
                             "data_free": n in DATA_FREE}
        print(f"{n:10s} {sp:18.3f} {ko:18.3f} {kt:19.3f}   ({len(ok)} archs{', data-free' if n in DATA_FREE else ''})")
    print(f"wall {wall:.1f} s for {a.n} architectures x {len(names)} proxies; loadavg {' '.join(out['loadavg'])}")
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
