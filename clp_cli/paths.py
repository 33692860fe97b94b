"""Output folders of the commands: refused with one line naming the option, before any work is done."""
from __future__ import annotations

import os
from pathlib import Path


def output_dir(text, field: str = "out") -> Path:
    """The folder ``text``, created if missing; refuses an empty name, a file in the way, or no write access."""
    if text is None or not str(text).strip():
        raise ValueError(f"{field}: empty folder name (give a path, e.g. runs/x)")
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{field}: {path} exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"{field}: cannot create {path}: {err.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"{field}: {path} is not writable")
    return path
