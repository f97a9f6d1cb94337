"""The package's layering: engine <- runtime <- applications (nas, sr), no import cycles.

Every import statement of every module (top level and inside functions) is read with ast, so an
import hidden in a function to dodge a cycle still counts."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PKG = REPO / "tensorgp"
CONCERNS = ("engine", "nas", "sr", "runtime")
# who may import whom (kernels are the engine's fast path)
ALLOWED = {
    "engine": {"engine", "kernels"},
    "runtime": {"engine", "runtime", "kernels"},
    "nas": {"engine", "runtime", "nas", "kernels"},
    "sr": {"engine", "runtime", "sr", "kernels"},
    "kernels": {"engine", "kernels"},
}


def _modules() -> dict[str, Path]:
    mods = {}
    for p in PKG.rglob("*.py"):
        rel = p.relative_to(PKG).with_suffix("")
        parts = ["tensorgp", *rel.parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p
    for p in (REPO / "kernels").glob("*.py"):  # installed as tensorgp.kernels
        mods["tensorgp.kernels" + ("" if p.stem == "__init__" else "." + p.stem)] = p
    return mods


def _resolve(name: str, level: int, importer: str, is_pkg: bool) -> str:
    if level == 0:
        return name
    base = importer.split(".")
    if not is_pkg:
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def import_graph() -> dict[str, set[str]]:
    """``{module: {tensorgp modules it imports}}``; ``from pkg import name`` counts as importing
    ``pkg.name`` when that is a module, else ``pkg``."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(node.module or "", node.level, mod, is_pkg)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for t in targets:
                while t and t not in mods and "." in t:
                    t = t.rsplit(".", 1)[0]
                if t in mods and t != mod and t != "tensorgp":
                    graph[mod].add(t)
    return graph


def _concern(mod: str) -> str | None:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in (*CONCERNS, "kernels") else None


def test_every_module_sits_in_a_concern():
    loose = [m for m in _modules() if m != "tensorgp" and _concern(m) is None]
    assert not loose, f"modules outside engine/nas/sr/runtime/kernels: {loose}"


def test_dependencies_point_one_way():
    bad = []
    for mod, deps in import_graph().items():
        c = _concern(mod)
        for d in deps:
            if c and _concern(d) not in ALLOWED[c]:
                bad.append(f"{mod} -> {d}")
    assert not bad, "imports against the layering (engine <- runtime <- nas/sr):\n" + "\n".join(sorted(bad))


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a list of modules, or None (iterative DFS, three colours)."""
    colour = dict.fromkeys(graph, 0)
    for start in graph:
        if colour[start]:
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        colour[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                colour[node] = 2
                stack.pop()
                path.pop()
            elif colour.get(nxt, 2) == 1:
                return path[path.index(nxt):] + [nxt]
            elif colour.get(nxt) == 0:
                colour[nxt] = 1
                stack.append((nxt, iter(sorted(graph[nxt]))))
                path.append(nxt)
    return None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


@pytest.mark.parametrize("concern, forbidden", [("engine", ("nas", "sr", "runtime")), ("runtime", ("nas", "sr"))])
def test_importing_a_layer_loads_nothing_above_it(concern, forbidden):
    code = (f"import sys, tensorgp.{concern}, importlib, pkgutil\n"
            f"for m in pkgutil.iter_modules(tensorgp.{concern}.__path__):\n"
            f"    importlib.import_module('tensorgp.{concern}.' + m.name)\n"
            f"print(' '.join(sorted(m for m in sys.modules if m.startswith('tensorgp.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    above = [m for m in out if m.split(".")[1] in forbidden]
    assert not above, f"importing every module of tensorgp.{concern} loaded {above}"
    assert f"tensorgp.{concern}" in out


def test_every_package_is_installed():
    """pyproject lists packages explicitly (kernels/ and cli.py are mapped into the namespace), so a
    new subpackage missing there would be absent from a non-editable install."""
    tomllib = pytest.importorskip("tomllib")
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in PKG.rglob("__init__.py")}
    assert found <= listed, f"packages missing from pyproject.toml [tool.setuptools] packages: {sorted(found - listed)}"
