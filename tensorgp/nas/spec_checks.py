"""Checks of a run's options before any data is loaded or any generation runs.

An option that is accepted and then ignored or misapplied gives a wrong figure with exit 0, so
every value is checked here, with a message naming the ``tensorgp run`` option and the value.
Engine settings (population, tournament, parsimony, patience...) are checked by
``EvolutionConfig`` itself.
"""
from __future__ import annotations

import math

from ..engine.device import resolve_device
from ..engine.fitness import AGGREGATIONS
from ..engine.primitives import PrimitiveSet
from .data import PREPROCESS_MODES
from .objective import SPACE_AGGREGATIONS, parse_metric
from .splits import SELECTIONS
from .transfer import AUTO, NESTED_SELECTIONS


def check_spec(spec) -> None:
    """``ValueError`` naming the option and value of the first invalid setting of a ``RunSpec``."""
    f = spec.fit_fraction
    if f is not None and not (isinstance(f, (int, float)) and math.isfinite(f) and 0.0 < f < 1.0):
        raise ValueError(f"--fit-fraction {f}: must lie strictly between 0 and 1 (the share of each training "
                         f"task's architectures that is fitted; leave it out to fit them all)")
    if spec.preprocess not in PREPROCESS_MODES:
        raise ValueError(f"--preprocess {spec.preprocess!r}: unknown; choose from {', '.join(PREPROCESS_MODES)}")
    parse_metric(spec.metric)
    aggregations = (AUTO,) + AGGREGATIONS + SPACE_AGGREGATIONS  # auto: transfer.resolve_auto
    if spec.aggregation not in aggregations:
        raise ValueError(f"--aggregation {spec.aggregation!r}: unknown; choose from {', '.join(aggregations)}")
    if spec.select not in (AUTO,) + SELECTIONS:
        raise ValueError(f"--select {spec.select!r}: unknown selection; choose from {', '.join((AUTO,) + SELECTIONS)}")
    if spec.select in NESTED_SELECTIONS and spec.config.runs < 2:  # would fall back to the train pick
        raise ValueError(f"--select {spec.select}: needs --runs 2 or more (run r leaves training space r mod G "
                         f"out of its fitness); got --runs {spec.config.runs}")
    PrimitiveSet.parse_functions(spec.functions)
    try:
        resolve_device(spec.device)
    except ValueError as e:
        raise ValueError(f"--device: {e}") from None
