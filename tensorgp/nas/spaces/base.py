"""The search-space interface a live search and ``tensorgp proxies`` work with.

A space names its architectures by integer encodings (``int64[D]``) and by string keys
(``"(0, 2, 3, 2, 3, 1)"``, the Suite-Zero table's form); it enumerates, samples, mutates and
builds them. A user plugs a space of their own in by subclassing ``SearchSpace`` (and passing
the object where a space name is accepted)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import torch
from torch import nn


class SpaceError(ValueError):
    """An unknown space, an architecture key the space cannot read, or an invalid encoding."""


class SearchSpace(ABC):
    name: str = "space"

    @abstractmethod
    def enumerate(self) -> torch.Tensor:
        """``int64[n, D]``: every architecture of the space."""

    @abstractmethod
    def decode(self, key: str | Sequence[int]) -> tuple[int, ...]:
        """The encoding of a key (string or integers); ``SpaceError`` naming the key if invalid."""

    @abstractmethod
    def encode(self, arch: Sequence[int]) -> str:
        """The canonical string key of an encoding (the Suite-Zero table's key form)."""

    @abstractmethod
    def build(self, arch: Sequence[int], seed: int = 0, num_classes: int = 10) -> nn.Module:
        """A freshly initialised ``nn.Module`` of the architecture (seeded, deterministic)."""

    def check_inputs(self, inputs: torch.Tensor) -> None:
        """``SpaceError`` when the space's networks cannot take ``inputs [N, C, H, W]`` (before any
        architecture is measured: one clear message, not a failure per proxy and architecture)."""

    def build_many(self, archs: Sequence[Sequence[int]], seed: int = 0, num_classes: int = 10):
        """A proxy subject evaluating several architectures at once (``measures.subject``);
        the default builds one model per architecture and is not batched."""
        return None

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``int64[n, D]``: ``n`` distinct architectures drawn uniformly (all when ``n`` >= the space)."""
        allv = self.enumerate()
        pick = torch.randperm(allv.shape[0], generator=generator)[: max(0, int(n))]
        return allv.index_select(0, pick)

    def mutate(self, arch: Sequence[int], generator: torch.Generator) -> tuple[int, ...]:
        """A neighbour: one position changed to another value seen at that position."""
        allv = self.enumerate()
        a = list(self.decode(arch))
        d = int(torch.randint(len(a), (1,), generator=generator))
        values = sorted(set(allv[:, d].tolist()) - {a[d]})
        if not values:
            return tuple(a)
        a[d] = values[int(torch.randint(len(values), (1,), generator=generator))]
        return tuple(a)
