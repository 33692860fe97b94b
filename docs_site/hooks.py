"""mkdocs hook: stage the repository's pages into ``docs_site/staged`` before mkdocs reads them.

Layout of the staged tree mirrors the repository, so relative links written for GitHub work:
``index.md`` (the README), ``docs/*.md``, ``notebooks/*.ipynb`` and their README, ``results/``'s
markdown and figures, and ``api/<module>.md`` (one mkdocstrings page per module of theory, toy,
clp_min). The navigation is built here from the same lists.
"""
from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("theory", "toy", "clp_min")
DOC_PAGES = [  # (title, file under docs/), in reading order
    ("Theory", "THEORY.md"), ("Paper map", "paper_map.md"), ("Results", "results.md"),
    ("Results in detail", "clp_min_results.md"), ("Toy claims in detail", "toy_summary.md"),
    ("The course", "course.md"), ("Using clp_min", "clp_min.md"), ("Your own model", "own_model.md"),
    ("Checking a trainer", "checking_a_trainer.md"), ("Trained zero-shot", "zero_shot_trained.md"),
    ("Scaling out", "scaling.md"), ("Limits and guarantees", "limits.md"), ("Design", "DESIGN.md"),
    ("Speed", "speed.md"),
]


def modules() -> list:
    """Dotted names of every module of the packages (``__init__`` as the package itself)."""
    out = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def stage(dest: Path) -> dict:
    """Copy the pages into ``dest`` (emptied first); returns the navigation."""
    for old in dest.iterdir():  # everything but .gitkeep (the folder must exist before mkdocs starts)
        if old.name != ".gitkeep":
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    (dest / "docs").mkdir(parents=True)
    shutil.copy(ROOT / "README.md", dest / "index.md")
    extra = sorted(p.name for p in (ROOT / "docs").glob("*.md") if p.name not in {f for _, f in DOC_PAGES})
    for name in [f for _, f in DOC_PAGES] + extra:
        if (ROOT / "docs" / name).exists():
            shutil.copy(ROOT / "docs" / name, dest / "docs" / name)
    shutil.copytree(ROOT / "notebooks", dest / "notebooks",
                    ignore=shutil.ignore_patterns("*.py", "src", "__pycache__", ".ipynb_checkpoints", "solutions"))
    shutil.copytree(ROOT / "results", dest / "results", ignore=shutil.ignore_patterns("*.json"))
    api = []
    (dest / "api").mkdir()
    for mod in modules():
        (dest / "api" / f"{mod}.md").write_text(f"# `{mod}`\n\n::: {mod}\n")
        api.append({mod: f"api/{mod}.md"})
    notebooks = [{p.stem: f"notebooks/{p.name}"} for p in sorted((dest / "notebooks").glob("*.ipynb"))]
    pages = [{t: f"docs/{f}"} for t, f in DOC_PAGES if (dest / "docs" / f).exists()]
    pages += [{Path(f).stem.replace("_", " ").capitalize(): f"docs/{f}"} for f in extra]
    return [{"Home": "index.md"}, {"Documentation": pages},
            {"Course": [{"About the course": "notebooks/README.md"}, *notebooks]}, {"API reference": api}]


def on_config(config):
    config["nav"] = stage(Path(config["docs_dir"]))
    return config
