"""The import arrows of docs/DESIGN.md ("Architecture"), read from the source with ``ast``.

Rooms and their ranks: a module may import modules of its own rank or lower, never higher, and
the module graph (function-level imports included: an import moved into a function to dodge a
circle is still a circle) has no cycle. ``theory/`` imports none of the other packages and no
torch; ``toy/`` imports ``theory/`` only; nothing but ``clp_min.studies`` and ``clp_cli`` imports
the studies.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = {"model", "task", "per_example", "mixing", "scope", "conditioning", "decoding", "pretrain", "weightings"}
TRAINER = {"rl", "config", "run_folder", "train", "checkpoint"}
RANK = {"core": 0, "mechanisms": 1, "oracle": 2, "interop": 3, "trainer": 4, "studies": 5}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room(module: str) -> str | None:
    """The room of a clp_min module (None for the package's own ``__init__``, which re-exports)."""
    parts = module.split(".")
    if parts[0] != "clp_min" or len(parts) == 1:
        return None
    if parts[1] in RANK:
        return parts[1]
    if parts[1] in CORE:
        return "core"
    if parts[1] in TRAINER:
        return "trainer"
    raise AssertionError(f"{module}: in no room; add it to a room in docs/DESIGN.md and in this test")


def imports(path: Path, known: set) -> set:
    """Every module ``path`` imports (absolute names; ``from pkg import sub`` resolved to ``pkg.sub``)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in known else node.module)
    return out


def graph(packages=("theory", "toy", "clp_min", "clp_cli")) -> dict:
    files = [p for pkg in packages for p in (ROOT / pkg).rglob("*.py")]
    known = {module_name(p) for p in files}
    return {module_name(p): imports(p, known) for p in files}


def upward(g: dict) -> list:
    """Every import from a room to a higher one."""
    wrong = []
    for mod, deps in g.items():
        r = room(mod)
        if r is None:
            continue
        for dep in deps:
            d = room(dep)
            if d is not None and RANK[d] > RANK[r]:
                wrong.append(f"{mod} ({r}) imports {dep} ({d})")
    return wrong


def test_every_clp_min_module_is_in_a_room_and_imports_follow_the_arrows():
    wrong = upward(graph())
    assert not wrong, "imports against the arrows:\n" + "\n".join(wrong)


def test_the_package_init_and_non_studies_code_never_import_the_studies():
    g = graph()
    offenders = [f"{m} imports {d}" for m, deps in g.items() for d in deps
                 if d.startswith("clp_min.studies") and not m.startswith(("clp_min.studies", "clp_cli"))]
    assert not offenders, offenders


def test_theory_and_toy_stay_below_clp_min():
    g = graph()
    for mod, deps in g.items():
        if mod.startswith("theory"):
            assert not {d.split(".")[0] for d in deps} & {"toy", "clp_min", "clp_cli", "torch"}, (mod, deps)
        if mod.startswith("toy"):
            assert not {d.split(".")[0] for d in deps} & {"clp_min", "clp_cli"}, (mod, deps)


def cycle(g: dict) -> list | None:
    """One cycle of the module graph (restricted to modules in ``g``), or None."""
    state, stack = {}, []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(g.get(m, ())):
            if d not in g or d == m:
                continue
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_circle():
    # package __init__ files re-export their submodules; an edge into a package is an edge to its __init__
    g = graph()
    assert cycle(g) is None, " -> ".join(cycle(g))


@pytest.mark.parametrize("case", ["upward", "circle"])
def test_the_checks_catch_a_planted_violation(case):
    """The checks above, fed a graph with one wrong arrow, find it (they do not pass vacuously)."""
    g = graph()
    if case == "upward":
        assert not upward(g)
        g["clp_min.oracle.exact"] = g["clp_min.oracle.exact"] | {"clp_min.train"}  # oracle -> trainer
        assert upward(g) == ["clp_min.oracle.exact (oracle) imports clp_min.train (trainer)"]
    else:
        g["clp_min.task"] = g["clp_min.task"] | {"clp_min.train"}  # train -> ... -> task -> train
        assert cycle(g) is not None
