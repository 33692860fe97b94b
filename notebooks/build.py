"""Rebuild the course notebooks from their sources and execute them: ``python notebooks/build.py [NAME ...]``.

Each ``notebooks/src/NAME.py`` is a Python file in jupytext's "percent" format
(``# %%`` starts a code cell, ``# %% [markdown]`` a prose cell, one comment line
per markdown line). ``notebooks/jupytext.toml`` pairs it with ``notebooks/NAME.ipynb``,
so Jupyter (with jupytext installed: ``pip install -e ".[course]"``) saves edits made
in either file to both, and ``jupytext --sync notebooks/src/*.py`` updates the
inputs of the ``.ipynb`` from the sources without running anything.

This script is the command that makes the committed notebooks: it reads each
source with jupytext, gives every cell a stable id (small diffs between builds),
executes it top to bottom in a fresh kernel of this interpreter (nbclient), and
writes ``notebooks/NAME.ipynb`` with its outputs. The notebooks are seeded, so a
rebuild on the same library versions prints the same numbers.
Environment: ``CLP_NOTEBOOK_QUICK=1`` runs the shorter live runs that the tests use
(do not commit notebooks built that way).
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import jupytext
import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
KERNEL = "clp-lab-build"
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}
CELL_TIMEOUT_S = 300
FIGURE_DPI = 72  # inline PNG resolution: keeps a committed notebook to a few hundred KB


def sources(names=()) -> list[Path]:
    """The sources ``notebooks/src/NAME.py`` of ``names`` (all of them when empty), in order."""
    if names:
        missing = [n for n in names if not (HERE / "src" / f"{n}.py").exists()]
        if missing:
            raise ValueError(f"names: no source notebooks/src/{missing[0]}.py")
        return [HERE / "src" / f"{n}.py" for n in names]
    return sorted((HERE / "src").glob("*.py"))


def read_source(source: Path) -> nbformat.NotebookNode:
    """The notebook of a percent-format source, without outputs, with stable cell ids."""
    nb = jupytext.read(source, fmt="py:percent")
    for i, cell in enumerate(nb.cells):
        cell.id = f"{source.stem[:2]}-{i:03d}"
        cell.metadata = {}
    nb.metadata = {"kernelspec": KERNELSPEC, "language_info": {"name": "python"},
                   "jupytext": {"formats": "ipynb,src//py:percent", "notebook_metadata_filter": "-all",
                                "cell_metadata_filter": "-all"}}
    return nb


def write_kernel_spec(root: Path, name: str = KERNEL) -> Path:
    """A kernel spec under ``root`` that launches ``sys.executable -m ipykernel_launcher``
    (the notebooks then see this interpreter's packages, registered kernel or not)."""
    from ipykernel.kernelspec import write_kernel_spec as _write

    _write(root / name)
    argv = json.loads((root / name / "kernel.json").read_text())["argv"]
    if argv[0] != sys.executable:
        raise RuntimeError(f"kernel spec launches {argv[0]}, not {sys.executable}")
    return root


class Session:
    """One kernel running a notebook's cells in order; ``run(cell)`` executes one more cell in the same kernel.

    ``with Session(nb, kernel_dir) as s: s.run_all(); s.run(extra_cell)``: the extra cells see the
    notebook's state (the tests use this to try exercise answers after a notebook has run).
    """

    def __init__(self, nb: nbformat.NotebookNode, kernel_dir: Path, env: dict | None = None):
        self.nb = nb
        self.km = KernelManager(kernel_name=KERNEL,
                                kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_dir)]))
        self.client = NotebookClient(nb, km=self.km, timeout=CELL_TIMEOUT_S, startup_timeout=120,
                                     resources={"metadata": {"path": str(HERE)}})
        self.env = {"MPLBACKEND": "module://matplotlib_inline.backend_inline", "OMP_NUM_THREADS": "1",
                    "PYDEVD_DISABLE_FILE_VALIDATION": "1", **(env or {})}

    def __enter__(self):
        self._kernel = self.client.setup_kernel(env={**os.environ, **self.env})
        self._kernel.__enter__()
        try:  # figures at FIGURE_DPI; not a cell of the notebook, and not counted
            self.run(nbformat.v4.new_code_cell(f"import matplotlib\nmatplotlib.rcParams['figure.dpi'] = {FIGURE_DPI}"),
                     store_history=False)
        except BaseException:
            self._kernel.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, *exc):
        return self._kernel.__exit__(*exc)

    def run(self, cell: nbformat.NotebookNode, store_history: bool = True) -> nbformat.NotebookNode:
        """Execute ``cell``, one of the notebook's or an extra one (raises
        ``nbclient.exceptions.CellExecutionError`` if it raises). An extra cell is appended while it runs
        (nbclient writes a cell back at its index) and removed after: the notebook keeps its cells."""
        index = next((i for i, c in enumerate(self.nb.cells) if c is cell), None)
        if index is not None:
            self.client.execute_cell(cell, index, store_history=store_history)
            return cell
        self.nb.cells.append(cell)
        try:
            self.client.execute_cell(cell, len(self.nb.cells) - 1, store_history=store_history)
        finally:
            self.nb.cells.pop()
        return cell

    def run_all(self) -> None:
        for cell in self.nb.cells:
            if cell.cell_type == "code":
                self.run(cell)


def execute(nb: nbformat.NotebookNode, kernel_dir: Path, env: dict | None = None) -> nbformat.NotebookNode:
    """``nb`` executed top to bottom in a fresh kernel, outputs in place (returned for convenience)."""
    with Session(nb, kernel_dir, env) as session:
        session.run_all()
    for cell in nb.cells:
        cell.metadata.pop("execution", None)  # timestamps: not reproducible
    return nb


def build(source: Path, kernel_dir: Path) -> Path:
    """Read, execute and write ``notebooks/NAME.ipynb``; returns its path."""
    target = HERE / f"{source.stem}.ipynb"
    nb = execute(read_source(source), kernel_dir)
    nbformat.validate(nb)
    nbformat.write(nb, target)
    return target


def main(argv=None) -> None:
    names = sys.argv[1:] if argv is None else argv
    if os.environ.get("CLP_NOTEBOOK_QUICK") == "1":
        raise SystemExit("CLP_NOTEBOOK_QUICK=1 is for the tests; unset it to build the committed notebooks")
    with tempfile.TemporaryDirectory() as tmp:
        kernel_dir = write_kernel_spec(Path(tmp))
        for src in sources(names):
            t0 = time.perf_counter()
            target = build(src, kernel_dir)
            print(f"wrote {target.relative_to(HERE.parent)}  ({time.perf_counter() - t0:.0f} s, "
                  f"{target.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
