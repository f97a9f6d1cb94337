"""The two calls a user of the NAS application starts from (re-exported as ``tensorgp.load_proxy``
and ``tensorgp.evolve_proxy``): read an evolved proxy from a result, or evolve one."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..engine.evolve import EvolutionConfig
from .data import find_data_dir
from .experiment import RunSpec, evolve_proxy as _evolve
from .proxy import Proxy, load_proxy, proxy_from_result

__all__ = ["evolve_proxy", "load_proxy"]

DEFAULT_PARSIMONY = 0.001  # as ``tensorgp run``: keeps the reported formula readable


def evolve_proxy(data: str | Path | Sequence[str | Path] | None = None, train: str = "nasbench201/*,nasbench301/*",
                 test: str | None = None, *, population: int = 1000, generations: int = 50, seed: int = 0,
                 runs: int = 1, select: str = "compact", parsimony: float = DEFAULT_PARSIMONY,
                 **spec: object) -> Proxy:
    """Evolve a proxy on the ``train`` tasks (globs) of ``data`` (default: ``find_data_dir()``)
    and return it; ``proxy.result`` holds the full result dict (per-task figures, Pareto front,
    baselines). Further ``RunSpec`` fields (``preprocess``, ``metric``, ``functions``, ...) pass
    through ``spec``."""
    paths = [find_data_dir()] if data is None else [data] if isinstance(data, (str, Path)) else list(data)
    cfg = EvolutionConfig(population=population, generations=generations, seed=seed, runs=runs, parsimony=parsimony)
    result = _evolve(RunSpec(data=paths, train=train, test=test, select=select, config=cfg, **spec))
    proxy = proxy_from_result(result)
    proxy.result = result
    return proxy
