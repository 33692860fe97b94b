"""Build the notebooks from their readable sources: ``python notebooks/build.py``.

Each ``notebooks/src/NAME.py`` is a Python file in the "percent" format that
editors such as VS Code and Spyder understand:

    # %% [markdown]
    # # A title
    # Prose, one comment line per markdown line.

    # %%
    code = "a code cell"

It becomes ``notebooks/NAME.ipynb`` with no outputs (the tests run it fresh).
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
MARKDOWN, CODE = "# %% [markdown]", "# %%"
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def _markdown_line(line: str, where: str) -> str:
    if line == "#":
        return ""
    if not line.startswith("# "):
        raise ValueError(f"{where}: a markdown cell line must start with '# ', got {line!r}")
    return line[2:]


def notebook_from_source(text: str, where: str = "source") -> nbformat.NotebookNode:
    """Split percent-format ``text`` into markdown and code cells."""
    cells, kind, lines = [], None, []

    def flush():
        body = "\n".join(lines).strip("\n")
        if kind == MARKDOWN:
            cells.append(nbformat.v4.new_markdown_cell(body))
        elif kind == CODE:
            cells.append(nbformat.v4.new_code_cell(body))
        elif body.strip():
            raise ValueError(f"{where}: text before the first '# %%' marker")

    for n, line in enumerate(text.splitlines(), 1):
        if line.strip() in (MARKDOWN, CODE):
            flush()
            kind, lines = line.strip(), []
        elif kind == MARKDOWN and line.strip():
            lines.append(_markdown_line(line.rstrip(), f"{where}:{n}"))
        else:
            lines.append(line.rstrip() if kind == CODE else "")
    flush()
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = KERNELSPEC
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def build(source: Path) -> Path:
    target = HERE / f"{source.stem}.ipynb"
    nb = notebook_from_source(source.read_text(), str(source))
    for i, cell in enumerate(nb.cells):  # stable ids keep diffs small between builds
        cell.id = f"{source.stem[:2]}-{i:03d}"
    nbformat.validate(nb)
    nbformat.write(nb, target)
    return target


if __name__ == "__main__":
    names = sys.argv[1:]
    sources = [HERE / "src" / f"{n}.py" for n in names] if names else sorted((HERE / "src").glob("*.py"))
    for src in sources:
        print("wrote", build(src).relative_to(HERE.parent))
