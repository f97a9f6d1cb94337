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
