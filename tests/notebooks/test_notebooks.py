"""The course notebooks: each committed .ipynb is its source, executed; each runs headless; each
exercise check accepts the reference answer and rejects a wrong one.

Sources are ``notebooks/src/NAME.py`` (jupytext percent format, paired with ``notebooks/NAME.ipynb``
by ``notebooks/jupytext.toml``); ``notebooks/build.py`` rebuilds and executes the notebooks. The
reference answers (and one wrong answer per exercise) are in ``notebooks/solutions/NAME.py``.

The kernel is the interpreter running pytest (a kernel spec written to a temporary folder). The
runs here set ``CLP_NOTEBOOK_QUICK=1``: notebooks with a live training run make it shorter and skip
the assertions about that run's numbers (the committed notebooks are built without it). To test the
full-length runs, ``CLP_NOTEBOOK_QUICK=0 python -m pytest tests/notebooks`` (several minutes).
"""
import importlib.util
import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient.exceptions import CellExecutionError

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
MAX_NOTEBOOK_KB = 400  # committed notebooks with their figures stay small

_spec = importlib.util.spec_from_file_location("notebooks_build", NOTEBOOKS / "build.py")
build = importlib.util.module_from_spec(_spec)  # notebooks/build.py: sources -> executed notebooks
_spec.loader.exec_module(build)

SOURCES = build.sources()
ANSWER = re.compile(r"# Exercise (\d+): your answer")
CHECK = re.compile(r"# Check of exercise (\d+)")
SOLUTION = re.compile(r"^# %% (reference|wrong) (\d+)\s*$", re.M)


def exercise_cells(nb) -> dict:
    """``{n: (answer cell, check cell)}``: cells whose first line is ``# Exercise n: your answer ...``
    and ``# Check of exercise n``."""
    found = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        first = cell.source.splitlines()[0] if cell.source else ""
        for pattern, slot in ((ANSWER, 0), (CHECK, 1)):
            if (match := pattern.match(first)):
                found.setdefault(int(match.group(1)), [None, None])[slot] = cell
    return {n: tuple(pair) for n, pair in sorted(found.items())}


def solutions(stem: str) -> dict:
    """``{(kind, n): code}`` from ``notebooks/solutions/NAME.py``, split at its ``# %% reference n`` and
    ``# %% wrong n`` markers."""
    text = (NOTEBOOKS / "solutions" / f"{stem}.py").read_text()
    parts = SOLUTION.split(text)  # [preamble, kind, n, code, kind, n, code, ...]
    return {(kind, int(n)): code.strip() for kind, n, code in zip(parts[1::3], parts[2::3], parts[3::3])}


def _text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.output_type == "stream")


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory):
    return build.write_kernel_spec(tmp_path_factory.mktemp("kernels"))


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_matches_source(source):
    """The committed .ipynb has its source's cells, executed in order without error, with the paper cited
    first and 2-4 exercises at the end (rebuild: ``python notebooks/build.py NAME``)."""
    target = NOTEBOOKS / f"{source.stem}.ipynb"
    assert target.exists(), f"{target.name} missing: run python notebooks/build.py {source.stem}"
    committed = nbformat.read(target, as_version=4)
    made = build.read_source(source)
    assert [(c.cell_type, c.source) for c in committed.cells] == [(c.cell_type, c.source) for c in made.cells], \
        f"{target.name} is out of date with src/{source.name}: run python notebooks/build.py {source.stem}"
    counts = [c.execution_count for c in committed.cells if c.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1)), f"{target.name}: not executed top to bottom in one run"
    errors = [o for c in committed.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, f"{target.name}: committed with an error output"
    assert target.stat().st_size < MAX_NOTEBOOK_KB * 1024, f"{target.name}: over {MAX_NOTEBOOK_KB} KB"
    first = committed.cells[0].source
    assert "Conditional Language Policy" in first and "2407.15762" in first, f"{target.name}: cite the paper first"
    assert 2 <= len(exercise_cells(committed)) <= 4, f"{target.name}: 2 to 4 exercises"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_runs_and_checks_exercises(source, kernel_dir):
    """The notebook runs headless (a cell that raises fails the test; its exercise stubs print "not
    attempted yet"); then, in the same kernel, each exercise's check passes on the reference answer and
    raises AssertionError on the wrong one."""
    nb = build.read_source(source)
    exercises = exercise_cells(nb)
    answers = solutions(source.stem)
    assert exercises and all(answer and check for answer, check in exercises.values()), "exercise cells missing"
    assert set(answers) == {(kind, n) for n in exercises for kind in ("reference", "wrong")}
    quick = os.environ.get("CLP_NOTEBOOK_QUICK", "1")
    with build.Session(nb, kernel_dir, env={"CLP_NOTEBOOK_QUICK": quick}) as session:
        session.run_all()
        for n, (_, check) in exercises.items():
            assert "not attempted yet" in _text(check), f"exercise {n}: the stub did not say so"
        for n, (_, check) in exercises.items():
            session.run(nbformat.v4.new_code_cell(answers["reference", n]))
            passed = session.run(nbformat.v4.new_code_cell(check.source))
            assert "correct" in _text(passed), f"exercise {n}: the reference answer was not accepted"
            session.run(nbformat.v4.new_code_cell(answers["wrong", n]))
            with pytest.raises(CellExecutionError, match="AssertionError"):
                session.run(nbformat.v4.new_code_cell(check.source))


@pytest.mark.parametrize("stem", ["01_gibbs_and_mixing", "02_sequences_and_alignment", "03_multitask_training",
                                  "05_exact_oracle", "06_checking_a_loss",
                                  "07_trained_experts"])
def test_notebook_asserts_what_it_teaches(stem):
    """These notebooks check their claims with ``assert`` in code cells (besides the exercise checks), so a
    run fails when a claim stops holding; printing alone would not."""
    nb = build.read_source(NOTEBOOKS / "src" / f"{stem}.py")
    checks = {id(check) for _, check in exercise_cells(nb).values()}
    asserts = sum(line.lstrip().startswith("assert ") for c in nb.cells if c.cell_type == "code" and id(c) not in checks
                  for line in c.source.splitlines())
    assert asserts >= 4, f"{stem}: only {asserts} assert statements"
