"""The import graph keeps its layers: no upward import, no module cycle, no import of a test module
(docs/interfaces.md, "Layers" and "Tests").

Every module's imports are read with ``ast`` (module level, inside functions, under ``TYPE_CHECKING``, and
``importlib.import_module("...")`` calls with a literal name), so a lazy or string import counts like any other.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ("l3net", "felix", "bgp", "policy", "bench")
ROOTS = (*PRODUCT, "tests")

# (importer prefix, imported prefix): an importer may not reach the imported layer. A prefix matches the module
# itself and everything under it.
FORBIDDEN: tuple[tuple[str, str], ...] = (
    *(("l3net", upper) for upper in ("felix", "bgp", "policy", "bench", "l3net.lab")),
    ("policy", "felix"),
    ("bgp", "felix"),
    *((lower, upper) for lower in ("felix", "bgp", "policy") for upper in ("bench", "l3net.lab")),
    # the lab starts agents and reflectors as processes: it needs only the core
    *(("l3net.lab", upper) for upper in ("felix", "bgp", "policy", "bench")),
    *((product, "tests") for product in PRODUCT),
    # drivers apply what the calculation decided; the calculation depends on them, not the reverse
    ("felix.drivers", "felix.calc"),
)

# Importer prefixes exempt from the "l3net" rules above, with the reason (keep this list short). The two
# composition roots are the commands whose subcommands live in other packages; they import them plainly.
EXEMPT_FROM_CORE: dict[str, str] = {
    "l3net.lab": "lab-only code above the core (it may import l3net.lab; its own rules are in FORBIDDEN)",
    "l3net.cli.agent_main": "the `l3net` command: dispatches to felix.cli, bgp.cli, bench.cli",
    "l3net.cli.ctl": "the `l3netctl` command: `node status` is bgp.status_cli",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for root in ROOTS:
        for path in sorted((REPO / root).rglob("*.py")):
            if ".venv" in path.parts or "results" in path.relative_to(REPO).parts:
                continue
            found[_module_name(path)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The deepest known module that ``name`` names (``pkg.mod.Class`` -> ``pkg.mod``); None if outside."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in MODULES:
            return candidate
        parts.pop()
    return None


def _imported_names(module: str, is_package: bool, source: str) -> Iterator[str]:
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source, module)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import sub` imports the submodule pkg.sub when there is one
            yield from (f"{base}.{alias.name}" for alias in node.names)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            yield node.args[0].value


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        names = _imported_names(module, path.name == "__init__.py", path.read_text())
        targets = {_resolve(name) for name in names}
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


GRAPH = _graph()


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_reader_sees_every_kind_of_import() -> None:
    source = """
import felix.calc
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from bgp.view import PeerSpec
from . import sibling
from ..keys import KeyLayout

def later() -> None:
    import importlib
    from policy import compiler
    importlib.import_module("bench.cli")
"""
    names = set(_imported_names("l3net.ipam.pools", False, source))
    assert {"felix.calc", "bgp.view.PeerSpec", "l3net.ipam.sibling", "l3net.keys.KeyLayout",
            "policy.compiler", "bench.cli"} <= names
    assert {_resolve(n) for n in names} >= {"felix.calc", "bgp.view", "l3net.keys", "policy.compiler",
                                             "bench.cli"}


def test_the_graph_covers_the_repository() -> None:
    assert "felix.cli" in GRAPH["l3net.cli.agent_main"]
    assert "bgp.status_cli" in GRAPH["l3net.cli.ctl"]
    assert len(MODULES) > 200


def test_no_layer_imports_upward() -> None:
    upward = sorted(
        f"{importer} -> {imported}"
        for importer, targets in GRAPH.items()
        for imported in targets
        for low, high in FORBIDDEN
        if _within(importer, low) and _within(imported, high)
        and not (low == "l3net" and any(_within(importer, e) for e in EXEMPT_FROM_CORE))
    )
    assert upward == []


def test_no_test_code_in_the_product() -> None:
    # builders, fakes and oracles for tests live under tests/, not in an installed package
    shipped = [m for m in MODULES if m.split(".")[0] in PRODUCT]
    assert [m for m in shipped if m.rpartition(".")[2] in ("testing", "fakes") or "test_" in m] == []


def _is_test_module(module: str) -> bool:
    return _within(module, "tests") and module.rpartition(".")[2].startswith("test_")


def _test_module_imports(graph: dict[str, set[str]]) -> list[str]:
    """``importer -> test module`` for every import of a ``tests.<...>.test_*`` module (issue 14)."""
    return sorted(f"{importer} -> {imported}" for importer, targets in graph.items()
                  for imported in targets if _is_test_module(imported))


def test_no_module_imports_a_test_module() -> None:
    # What test modules share (fixtures, builders, rigs, strategies) lives in a helper module of its rung
    # (tests/builders.py, tests/fakes/, tests/integration/bgp_fabric.py, tests/netns/felix_rig.py, ...), so that
    # a test module can be run, changed or deleted without breaking another.
    leaks = _test_module_imports(GRAPH)
    assert leaks == [], "imports of test modules (move what they share into a helper module): " + "; ".join(leaks)


def test_an_import_of_a_test_module_is_named() -> None:
    source = """
from tests.unit.test_bgp_config import THREE
from tests.unit.bgp_builders import cfg

def later() -> None:
    from . import test_keys
"""
    targets = {_resolve(name) for name in _imported_names("tests.unit.test_new", False, source)}
    graph = {"tests.unit.test_new": {t for t in targets if t is not None}}
    assert _test_module_imports(graph) == ["tests.unit.test_new -> tests.unit.test_bgp_config",
                                           "tests.unit.test_new -> tests.unit.test_keys"]


def test_no_module_cycles() -> None:
    assert _strongly_connected(GRAPH) == []


def test_cycle_finder_finds_a_cycle() -> None:
    assert _strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _strongly_connected({"a": {"b"}, "b": set()}) == []


def test_the_composition_roots_are_the_top_layer() -> None:
    # the two exempt commands may import every layer because nothing shipped imports them back: a module
    # that did would reach felix, bgp and bench through them
    roots = ("l3net.cli.agent_main", "l3net.cli.ctl")
    importers = sorted(f"{importer} -> {imported}" for importer, targets in GRAPH.items()
                       if importer.split(".")[0] in PRODUCT
                       for imported in targets if imported in roots and importer not in roots)
    assert importers == []
    assert set(roots) == {e for e in EXEMPT_FROM_CORE if e != "l3net.lab"}
