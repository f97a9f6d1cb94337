"""Search spaces a live search and ``tensorgp proxies`` can build (``get_space`` by name)."""
from .base import SearchSpace, SpaceError
from .nb201 import NB201

SPACES = {"nb201": NB201}


def get_space(space: "str | SearchSpace", **kw) -> SearchSpace:
    """A space object as is, or a known space by name (``SpaceError`` naming the known ones)."""
    if isinstance(space, SearchSpace):
        return space
    if space not in SPACES:
        raise SpaceError(f"unknown search space {space!r}; spaces: {', '.join(SPACES)} (or pass a SearchSpace object)")
    return SPACES[space](**kw)


__all__ = ["NB201", "SPACES", "SearchSpace", "SpaceError", "get_space"]
