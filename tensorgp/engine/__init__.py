"""The application-agnostic GP engine: primitive set, program tensors and their structure,
initialisation, variation, evaluation (torch reference, numba CPU, Triton CUDA), rank
statistics, the evolution loop and expressions. Imports nothing from ``tensorgp.nas``,
``tensorgp.sr`` or ``tensorgp.runtime``."""
