"""tensorgp: tensorized genetic programming on the device, for zero-cost NAS proxies and
large-scale symbolic regression."""
__version__ = "0.1.0"


def __getattr__(name: str):
    # lazy, so that ``import tensorgp`` stays light
    if name == "SymbolicRegressor":
        from .sr.regressor import SymbolicRegressor

        return SymbolicRegressor
    if name in ("load_proxy", "evolve_proxy"):
        from .nas import api

        return getattr(api, name)
    raise AttributeError(f"module 'tensorgp' has no attribute {name!r}")
