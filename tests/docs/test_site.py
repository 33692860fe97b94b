"""The documentation site builds from the repository with one command, offline, without warnings,
and shows what a reader needs: the README as home, the docs, the API reference from the docstrings,
and the notebooks with their figures (every image output of a committed notebook is in its page)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("mkdocs", reason="the docs extra is part of the README's install")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--site-dir", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    problems = [line for line in proc.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert not problems, "\n".join(problems)
    return out


def test_home_docs_and_api_pages(site):
    assert "Conditional Language Policies" in (site / "index.html").read_text()
    for page in ("THEORY", "paper_map", "results", "DESIGN", "limits"):
        assert (site / "docs" / f"{page}.html").exists(), page
    api = (site / "api" / "clp_min.conditioning.html").read_text()
    assert "ParamConditioned" in api and "theta_c(w) = sum_i w_i theta_i" in api  # rendered from the docstring


def test_every_notebook_is_rendered_with_its_figures(site):
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        html = (site / "notebooks" / f"{nb.stem}.html").read_text()
        cells = json.loads(nb.read_text())["cells"]
        images = sum("image/png" in o.get("data", {}) for c in cells for o in c.get("outputs", []))
        assert html.count("data:image/png") >= images, (nb.name, images)
