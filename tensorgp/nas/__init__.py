"""The zero-cost-proxy application: Suite-Zero loading and preprocessing, the rank objective,
baselines, protocols, proxy evolution, architecture search and the report. Uses the engine and
the runtime."""
