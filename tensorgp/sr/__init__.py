"""Symbolic regression: ``SymbolicRegressor`` (scikit-learn estimator), losses and constant
optimisation. Uses the engine and the runtime."""
