"""The 13 NAS-Bench-Suite-Zero zero-cost proxies computed on torch models (one module per family)."""
from .registry import CHEAP, DATA_FREE, NAMES, Measured, check_batch, compute, measure, parse_names
from .subject import MeasureError, ModuleSubject, as_subject

__all__ = ["CHEAP", "DATA_FREE", "NAMES", "Measured", "MeasureError", "ModuleSubject", "as_subject", "check_batch",
           "compute", "measure", "parse_names"]
