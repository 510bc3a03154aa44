"""Imports point down the layers and form no cycle; the light entry points never load torch.

Every module of src/airlab is read with ``ast`` (no import happens): module-level and
function-level imports count (a lazy import is still a dependency), ``from . import x`` is
resolved, and imports under ``if TYPE_CHECKING:`` are skipped. LAYERS below is the one table of
which layer a module is in (longest prefix wins); airlab/__init__.py is a lazy export table and
is exempt.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "airlab"

LAYERS: dict[str, int] = {
    # 0: foundations, torch-free
    "airlab.errors": 0, "airlab.settings": 0, "airlab.config": 0, "airlab.run.result": 0,
    "airlab.sandbox": 0,  # runs untrusted code in a confined process (stdlib only)
    # 1: spec (torch-free), data, models, fixed measurements
    "airlab.spec": 1, "airlab.data": 1, "airlab.models": 1, "airlab.measure": 1,
    "airlab.energy": 1,
    "airlab.techniques": 2,
    "airlab.run": 3,  # trainer, workloads, execute, worker, optim, seeding, provenance, health
    "airlab.plan": 4, "airlab.check": 4,
    "airlab.executors": 5, "airlab.store": 5,
    "airlab.analysis": 6,
    "airlab.validate": 7,  # the rubric: rates an Analysis, runs nothing
    "airlab.report": 8,
    "airlab.experiment": 9, "airlab.decide": 9,  # the pipeline and its sequential decisions
    "airlab.calibrate": 9,  # A/A runs for the noise floor, and the controls
    "airlab.agents": 10,
    "airlab.cli": 11, "airlab.__main__": 11,
    "airlab.dashboard": 11,  # the live web page over the store (beside cli/, which starts it)
}
EXEMPT = {"airlab"}  # the lazy export table


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def layer_of(mod: str) -> int:
    best = max((k for k in LAYERS if mod == k or mod.startswith(k + ".")), key=len, default=None)
    if best is None:
        raise AssertionError(f"{mod} has no layer: add it to LAYERS in tests/test_layers.py")
    return LAYERS[best]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST) -> list[ast.AST]:
    """Every node below ``node`` except the bodies of ``if TYPE_CHECKING:``."""
    out: list[ast.AST] = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for extra in child.orelse:
                out.append(extra)
                out += _walk(extra)
            continue
        out.append(child)
        out += _walk(child)
    return out


def _target(name: str) -> str | None:
    """The airlab module an imported dotted name refers to (its longest known prefix)."""
    parts = name.split(".")
    while parts:
        cand = ".".join(parts)
        if cand in MODULES:
            return cand
        parts.pop()
    return None


def imports_of(mod: str) -> dict[str, int]:
    """airlab modules imported by ``mod`` -> the line of the first such import."""
    path = MODULES[mod]
    tree = ast.parse(path.read_text(), str(path))
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    found: dict[str, int] = {}
    for node in _walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # `from pkg import sub` imports the submodule when there is one, else pkg itself.
            names = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in MODULES else stem
                     for a in node.names]
        for n in names:
            t = _target(n) if n.split(".")[0] == "airlab" else None
            if t is not None and t != mod:
                found.setdefault(t, node.lineno)  # type: ignore[attr-defined]
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def test_every_module_has_a_layer() -> None:
    missing = [m for m in MODULES if m not in EXEMPT and not any(
        m == k or m.startswith(k + ".") for k in LAYERS)]
    assert not missing, f"modules without a layer (add to LAYERS): {missing}"


def test_imports_point_down() -> None:
    bad = []
    for mod, deps in GRAPH.items():
        if mod in EXEMPT:
            continue
        for dep, line in deps.items():
            if dep in EXEMPT:
                continue
            if layer_of(dep) > layer_of(mod):
                bad.append(f"{MODULES[mod].relative_to(SRC)}:{line}: {mod} (layer "
                           f"{layer_of(mod)}) imports {dep} (layer {layer_of(dep)})")
    assert not bad, "imports that climb up the layers:\n" + "\n".join(sorted(bad))


def _cycles(graph: dict[str, dict[str, int]]) -> list[tuple[list[str], list[str]]]:
    """Strongly connected components with more than one module (Tarjan): for each, one
    concrete cycle and every module of the component."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[tuple[list[str], list[str]]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, {}):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append((_one_cycle(sorted(comp), graph), sorted(comp)))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _one_cycle(comp: list[str], graph: dict[str, dict[str, int]]) -> list[str]:
    """A concrete cycle inside a strongly connected component, for the failure message."""
    members = set(comp)
    path = [comp[0]]
    seen = {comp[0]}
    while True:
        nxt = next(w for w in sorted(graph[path[-1]]) if w in members)
        if nxt in seen:
            return path[path.index(nxt):] + [nxt]
        path.append(nxt)
        seen.add(nxt)


def test_no_import_cycle() -> None:
    graph = {m: d for m, d in GRAPH.items() if m not in EXEMPT}
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(
        f"{' -> '.join(c)}  (component: {', '.join(m)})" for c, m in cycles)


def test_the_checker_finds_what_it_should() -> None:
    # The checker itself must be able to fail: a made-up cycle and a made-up climb.
    assert _cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [
        (["a", "b", "c", "a"], ["a", "b", "c"])]
    assert layer_of("airlab.run.result") == 0 and layer_of("airlab.run.trainer") == 3
    assert layer_of("airlab.cli.run") == 11
    assert "airlab.data.text" in GRAPH["airlab.data"]  # `from airlab.data import text as _text`
    assert "airlab.errors" in GRAPH["airlab.spec"]


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(SRC)})


def test_loading_a_spec_does_not_import_torch() -> None:
    p = _python("import sys, airlab.spec\n"
                "s = airlab.spec.load_spec('demo')\n"
                "heavy = sorted(m for m in ('torch', 'numpy', 'sqlalchemy', 'scipy') "
                "if m in sys.modules)\n"
                "assert 'torch' not in sys.modules, heavy\n"
                "print(s.name, heavy)")
    assert p.returncode == 0, p.stdout + p.stderr


def _console_script() -> str:
    found = shutil.which("airlab", path=str(Path(sys.executable).parent)) or shutil.which(
        "airlab")
    if found is None:
        pytest.skip("the airlab console script is not installed (pip install -e .)")
    return found


def test_help_is_fast_and_does_not_import_torch() -> None:
    script = _console_script()
    # The installed console script, run by this Python with -X importtime: every module it
    # imported is listed on stderr, so torch would show up by name.
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-X", "importtime", script, "--help"],
                       capture_output=True, text=True, timeout=120)
    wall = time.perf_counter() - t0
    assert p.returncode == 0 and "Usage" in p.stdout, p.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in p.stderr.splitlines()
                if line.startswith("import time:")}
    assert "airlab.cli" in imported  # the listing works
    heavy = sorted(m for m in imported if m.split(".")[0] in ("torch", "sqlalchemy", "scipy"))
    assert not heavy, f"airlab --help imported {heavy[:5]}"
    # "Well under a second" on an idle machine; generous here for a loaded 2-core box.
    assert wall < 10, f"airlab --help took {wall:.1f} s"
    m = subprocess.run([sys.executable, "-m", "airlab.cli", "--help"], capture_output=True,
                       text=True, timeout=120)
    assert m.returncode == 0 and "Usage" in m.stdout, m.stderr[-2000:]
