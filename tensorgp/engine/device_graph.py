"""CUDA-graph replay of the device path's breeding (``EvolutionConfig.variation="device"`` on CUDA).

``device_variation.breed_device`` has static shapes for a run (population, children, program
width) and never waits for the host, so its ~300 launches per generation can be captured once
and replayed as one graph launch. The inputs are copied into the graph's static tensors before
each replay and the children cloned out after it (the next replay overwrites them).

Unmeasured: written for CUDA and guarded by it; on any failure to capture (an old driver, an
operation that cannot be captured) it warns once and breeds eagerly, with identical results.
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch

from .population import Population


class GraphedBreed:
    """``breed(pop, fitness, key) -> Population`` replayed from a CUDA graph after the first call."""

    def __init__(self, breed: Callable[[Population, torch.Tensor, torch.Tensor], Population]):
        self.breed = breed
        self.graph: torch.cuda.CUDAGraph | None = None
        self.failed = False
        self.shapes: tuple | None = None

    def __call__(self, pop: Population, fitness: torch.Tensor, key: torch.Tensor) -> Population:
        shapes = (tuple(pop.ops.shape), tuple(fitness.shape), pop.device)
        if self.failed or pop.device.type != "cuda":
            return self.breed(pop, fitness, key)
        if self.graph is None or shapes != self.shapes:
            try:
                self._capture(pop, fitness, key)
                self.shapes = shapes
            except Exception as e:  # capture is an optimisation: eager breeding gives the same children
                warnings.warn(f"CUDA graph capture of breeding failed ({e!r}); breeding eagerly")
                self.failed, self.graph = True, None
                return self.breed(pop, fitness, key)
        for dst, src in zip(self.inputs, (pop.ops, pop.consts, pop.length, fitness, key)):
            dst.copy_(src)
        self.graph.replay()
        return Population(self.out.ops.clone(), self.out.consts.clone(), self.out.length.clone())

    def _capture(self, pop: Population, fitness: torch.Tensor, key: torch.Tensor) -> None:
        self.inputs = tuple(t.clone() for t in (pop.ops, pop.consts, pop.length, fitness, key))
        static = Population(*self.inputs[:3])
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up: lazy caches (tables, ranges) are filled outside the capture
            self.breed(static, self.inputs[3], self.inputs[4])
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = self.breed(static, self.inputs[3], self.inputs[4])


class GraphedFunction:
    """``fn(*tensors) -> tuple of tensors`` replayed from a CUDA graph after its first call (per
    input shapes): for a whole device generation (``EvolutionConfig.cuda_graph``).

    ``fn`` must be a fixed sequence of device operations of its inputs and of state that does
    not change between calls (caches filled by the warm-up run): no host reads, no Python
    branches on values, no host-side inputs other than what the inputs carry. The inputs are
    copied into the graph's static tensors before each replay and the outputs cloned after it.
    Off CUDA, or after a failed capture (warned once), ``fn`` runs eagerly, with the same results.
    Unmeasured: written for CUDA, checked there by bench/device_check.py.
    """

    def __init__(self, fn: Callable[..., tuple]):
        self.fn = fn
        self.graph: torch.cuda.CUDAGraph | None = None
        self.failed = False
        self.shapes: tuple | None = None
        self.replays = 0

    def __call__(self, *args: torch.Tensor) -> tuple:
        if self.failed or args[0].device.type != "cuda":
            return self.fn(*args)
        shapes = tuple((tuple(t.shape), t.dtype, t.device) for t in args)
        if self.graph is None or shapes != self.shapes:
            try:
                self._capture(args)
                self.shapes = shapes
            except Exception as e:  # capture is an optimisation: eager runs give the same results
                warnings.warn(f"CUDA graph capture failed ({e!r}); running eagerly")
                self.failed, self.graph = True, None
                return self.fn(*args)
        for dst, src in zip(self.inputs, args):
            dst.copy_(src)
        self.graph.replay()
        self.replays += 1
        return tuple(o.clone() for o in self.outputs)

    def _capture(self, args: tuple) -> None:
        self.inputs = tuple(t.clone() for t in args)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up: lazy caches and kernel compiles outside the capture
            self.fn(*self.inputs)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = tuple(self.fn(*self.inputs))
