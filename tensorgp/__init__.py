"""tensorgp: tensorized genetic programming on the device, for zero-cost NAS proxies and
large-scale symbolic regression."""
__version__ = "0.1.0"
