"""Output folders of the commands: never silently overwritten, one writer at a time.

    with output_folder(path, files=("front.json", "front.png"), resume=None, overwrite=False) as out:
        ...  # write under out

On entry, in this order (docs/limits.md states the guarantees):

1. ``path`` is created if missing; an empty name, a file in the way or no write access is
   refused with one line naming ``field`` (``output_dir``).
2. An OS lock (``fcntl.flock``, exclusive, non-blocking) on ``path/.clp.lock`` is taken for the
   whole block; the file holds the holder's pid. A second writer is refused at once, naming
   that pid. The kernel drops the lock when its process ends, however it ends (SIGKILL
   included), so a killed run never leaves a stale lock.
3. A replacement left unfinished by a killed ``--overwrite`` (``path/.clp-replaced``) is undone:
   the old files go back in place (step 5 says how).
4. If ``path`` holds any of ``files`` (names or glob patterns: what the command writes) it is
   refused unless ``resume`` (continue from them) or ``overwrite``. ``resume=None`` says the
   command has no ``--resume``, so the message offers only ``--overwrite``.
5. ``overwrite``: the old entries among ``files`` are moved aside into ``path/.clp-replaced``
   (one ``rename`` each, after a manifest naming them) and the command writes fresh. When the
   block ends normally the backup is committed (renamed to ``.clp-replaced.done``, then deleted);
   when it raises (an error, Ctrl-C) the new files are deleted and the old ones put back at
   once; when the process is killed, the next command that opens the folder puts them back
   (3). The folder thus ends holding the whole old run or the whole new one, never a mix.

It is no mathematics: it lives in theory/ because theory/ is the bottom of the ladder (no torch,
nothing imported from above), so the theory and toy commands, clp_cli and ``clp_min.train.train``
(a Python sweep script is protected as ``clp train`` is) share one implementation.
POSIX only (``fcntl``).
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

LOCK = ".clp.lock"
BACKUP = ".clp-replaced"
MANIFEST = "manifest.json"


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


def held_by(path) -> int | None:
    """The pid holding ``path``'s lock (0 if it has not written it yet), or None when no process holds
    it; nothing is changed."""
    lock = Path(path) / LOCK
    if not lock.exists():
        return None
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _pid(fd) or 0
    finally:
        os.close(fd)  # also releases the shared lock taken just now
    return None


def refuse_if_held(path, field: str = "out") -> None:
    """Refuse, naming the holder, a folder whose lock another process holds (a cheap early check: the
    lock itself is taken by ``output_folder``)."""
    pid = held_by(path)
    if pid is not None:
        raise _in_use(Path(path), pid, field)


def _pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None


def _in_use(path: Path, pid: int | None, field: str) -> ValueError:
    return ValueError(f"{field}: {path} is in use by process {pid if pid else '(unknown)'}, another clp command "
                      f"writing there; wait for it to end or choose another folder")


def _lock(path: Path, field: str) -> int:
    """An fd holding the exclusive lock of ``path``; refuses, naming the holder, when another process has it."""
    fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by exec'd children
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _pid(fd)
        os.close(fd)
        raise _in_use(path, pid, field) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def holds(path, files) -> list[str]:
    """The entries of ``path`` matched by ``files`` (names or glob patterns), sorted."""
    return sorted({p.name for pattern in files for p in Path(path).glob(pattern)} - {LOCK, BACKUP})


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


def _move_aside(path: Path, files, found: list) -> None:
    """Manifest first (the names the command may write, the names moved), then one rename per old entry."""
    backup = path / BACKUP
    backup.mkdir()
    tmp = backup / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps({"files": list(files), "moved": found}))
    os.replace(tmp, backup / MANIFEST)
    for name in found:
        os.rename(path / name, backup / name)


def _restore(path: Path) -> bool:
    """Undo an unfinished replacement: delete what the new run wrote, put the old entries back.
    Idempotent, so a restore that is itself killed is finished by the next one. Returns whether
    there was one to undo."""
    _remove(path / (BACKUP + ".done"))  # a committed replacement whose deletion was interrupted
    backup = path / BACKUP
    if not backup.exists():
        return False
    try:
        manifest = json.loads((backup / MANIFEST).read_text())
    except (OSError, ValueError):  # killed before the manifest was in place: nothing was moved yet
        _remove(backup)
        return False
    for name in holds(path, manifest["files"]):
        if name not in manifest["moved"]:
            _remove(path / name)  # written by the new run only
    for name in manifest["moved"]:
        if (backup / name).exists() or (backup / name).is_symlink():
            _remove(path / name)
            os.rename(backup / name, path / name)
    _remove(backup)
    return True


def _commit(path: Path) -> None:
    done = path / (BACKUP + ".done")
    os.rename(path / BACKUP, done)  # from here on the new run stands
    _remove(done)


def _check_contents(path: Path, files, resume, overwrite: bool, field: str) -> list:
    """The entries of ``files`` in ``path``; refused (one line naming the ways on) unless resume or overwrite."""
    found = holds(path, files)
    if found and not (resume or overwrite):
        ways = "continue with --resume or replace them with --overwrite" if resume is not None else \
            "replace them with --overwrite"
        shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
        raise ValueError(f"{field}: {path} already holds {shown}; {ways} (or choose another folder)")
    return found


def check_output_folder(path, files, resume: bool | None = None, overwrite: bool = False, field: str = "out") -> None:
    """What ``output_folder`` would refuse, checked without taking the lock or changing anything
    (a launcher checks this before starting the processes whose writer then holds the folder)."""
    path = output_dir(path, field)
    if resume and overwrite:
        raise ValueError("overwrite: --resume continues the run in the folder, --overwrite replaces it; give one")
    pid = held_by(path)
    if pid is not None:
        raise _in_use(path, pid, field)
    if not (path / BACKUP).exists():  # else the writer first puts back an interrupted --overwrite's files
        _check_contents(path, files, resume, overwrite, field)


@contextmanager
def output_folder(path, files, resume: bool | None = None, overwrite: bool = False, field: str = "out"):
    """Hold ``path`` for the block: locked, checked against ``files``, replaced atomically under
    ``overwrite`` (module doc). Yields the folder as a Path."""
    path = output_dir(path, field)
    if resume and overwrite:
        raise ValueError("overwrite: --resume continues the run in the folder, --overwrite replaces it; give one")
    fd = _lock(path, field)
    try:
        if _restore(path):
            print(f"clp: {path}: put back the files that an interrupted --overwrite was replacing",
                  file=sys.stderr)
        found = _check_contents(path, files, resume, overwrite, field)
        replacing = bool(overwrite and found)
        if replacing:
            _move_aside(path, files, found)
        try:
            yield path
        except BaseException:
            if replacing:
                _restore(path)
            raise
        if replacing:
            _commit(path)
    finally:
        os.close(fd)  # releases the lock
