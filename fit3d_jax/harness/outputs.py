"""The rules for what a job writes: its output folder is checked before any work; it writes only
inside it, never into its own inputs; it replaces only what this project wrote (each folder it
creates holds a marker file), and only when told to; one run at a time per output folder (a
lock); result files hold finite numbers only."""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import math
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterable
from pathlib import Path

from fit3d_jax.errors import ConfigError, RunError

MARKER = ".fit3d_jax"  # in every folder a job creates for itself; what wrote it
LOCK = ".fit3d_jax.lock"  # held by the run writing into the folder; says who
_locks: dict[Path, int] = {}  # this process's locks (folder -> open descriptor), released when it ends


def output_dir(path: str | os.PathLike, field: str) -> Path:
    """``path`` resolved, created and writable; a file there, or a folder that cannot be written,
    is the config's mistake, found before any work."""
    folder = Path(path).expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{field}={str(path)!r} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as e:
        raise ConfigError(f"{field}={str(path)!r} cannot be written ({e.strerror or e})") from None
    return folder


def claim(folder: Path, job: str) -> Path:
    """Marks ``folder`` (created if needed) as written by ``job``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text(json.dumps({"written_by": job}) + "\n")
    return folder


def is_ours(folder: Path) -> bool:
    return (Path(folder) / MARKER).is_file()


def claim_run(folder: Path, job: str, field: str) -> Path:
    """A run's own folder: created and marked, or marked already (a resumed or extended run); a
    folder with files in it but no marker holds someone else's, and is the config's mistake."""
    folder = Path(folder)
    if folder.is_dir() and not is_ours(folder) and any(p.name != LOCK for p in folder.iterdir()):
        raise ConfigError(f"{field}: {folder} holds files fit3d_jax did not write (no {MARKER} file); not writing "
                          "there: choose another folder")
    return claim(folder, job)


def lock(folder: Path, field: str) -> None:
    """Takes ``folder``'s lock for the rest of this process (a second call is a no-op); another
    run holding it is the config's mistake, named with its pid, host and start time. The lock
    is the operating system's, so a killed run leaves none behind."""
    folder = Path(folder).resolve()
    if folder in _locks:
        return
    descriptor = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(descriptor, 512).decode(errors="replace").strip() or "a run that has not said who it is"
        os.close(descriptor)
        raise ConfigError(f"{field}: {folder} is in use by another run ({holder}); wait for it to end, or choose another "
                          "folder") from None
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"pid {os.getpid()} on {socket.gethostname()}, started {started}\n".encode())
    _locks[folder] = descriptor


def apart_from_inputs(folder: Path, inputs: Iterable[Path], field: str, what: str = "an input") -> None:
    """A job never writes into what it reads: ``folder`` may not be one of ``inputs`` (folders or
    files) or lie inside one."""
    folder = Path(folder).expanduser().resolve()
    for path in inputs:
        path = Path(path).expanduser().resolve()
        if folder == path or folder.is_relative_to(path):
            raise ConfigError(f"{field}={str(folder)!r} is {'' if folder == path else 'inside '}{what}, {path}: a job never "
                              "writes into what it reads; choose another folder")


def claim_output_dir(path: str | os.PathLike, job: str, field: str, inputs: Iterable[Path] = (), *, primary: bool = True) -> Path:
    """A job's whole output folder, before any work: resolved, apart from its ``inputs``, created
    and writable (``output_dir``), marked as ``job``'s (``claim_run``: a folder of someone else's
    files is refused) and locked for this run by its ``primary`` process (the others of a
    multi-host run share it)."""
    apart_from_inputs(Path(path), inputs, field)
    folder = output_dir(path, field)
    if primary:  # first: a folder in use is reported as such
        lock(folder, field)
    return claim_run(folder, job, field)


def claim_output_file(path: str | os.PathLike, field: str, overwrite: bool, inputs: Iterable[Path] = ()) -> Path:
    """A job's one output file or checkpoint folder, before any work: resolved, apart from its
    ``inputs``, its folder created and writable, replaceable (``check_replaceable``), and the
    folder's lock taken."""
    path = Path(path).expanduser().resolve()
    apart_from_inputs(path, inputs, field)
    check_replaceable(path, field, overwrite)  # first: a refusal touches nothing
    output_dir(path.parent, f"{field} (its folder)")
    lock(path.parent, f"{field} (its folder)")
    return path


def check_replaceable(path: Path, field: str, overwrite: bool) -> None:
    """Raises ConfigError unless ``path`` may be written: it does not exist, or it is a file or a
    folder this project wrote and ``overwrite`` is set. Nothing is removed here."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if path.is_dir() and not is_ours(path):
        raise ConfigError(f"{field}={str(path)!r} exists and was not written by fit3d_jax (no {MARKER} file in it); "
                          "not replacing it: choose another path")
    if not overwrite:
        raise ConfigError(f"{field}={str(path)!r} exists; set config.overwrite=True to replace it")


def inside(path: Path, root: Path) -> Path:
    """``path`` resolved; an error unless it lies inside ``root``."""
    resolved = Path(path).resolve()
    if not resolved.is_relative_to(Path(root).resolve()):
        raise RunError(f"{path} resolves to {resolved}, outside the output folder {Path(root).resolve()}; not writing there")
    return resolved


def safe_name(name: str) -> str:
    """A name usable as one folder name: no separators, not '.' or '..', not empty."""
    cleaned = re.sub(r"[^\w.+-]", "_", name).strip(".") or "_"
    return cleaned


def _non_finite(tree, path: str = "") -> list[str]:
    if isinstance(tree, dict):
        return [p for k, v in tree.items() for p in _non_finite(v, f"{path}.{k}" if path else str(k))]
    if isinstance(tree, (list, tuple)):
        return [p for i, v in enumerate(tree) for p in _non_finite(v, f"{path}[{i}]")]
    if isinstance(tree, float) and not math.isfinite(tree):
        return [path]
    return []


def write_json(path: Path, value, *, indent: int = 1) -> Path:
    """Strict JSON, written whole or not at all; a non-finite number is an error naming its key."""
    bad = _non_finite(value)
    if bad:
        raise RunError(f"{path}: refusing to write non-finite values at {', '.join(bad)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=indent, allow_nan=False) + "\n")
    tmp.replace(path)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def remove_stale_staging(target: Path) -> None:
    """Removes what killed runs left beside ``target`` (``.<name>.partial-<pid>`` folders whose
    process is gone): they are this project's by their name."""
    target = Path(target)
    for stale in target.parent.glob(f".{target.name}.partial-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and (int(pid) == os.getpid() or not _alive(int(pid))):
            shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def staged(target: Path):
    """Yields an empty folder beside ``target`` (``.<name>.partial-<pid>``) to write into; when the
    block completes it replaces ``target`` (the caller has checked that it may), so ``target``
    appears only complete. The folder goes either way; killed runs' leftovers go first."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target)
    staging = target.with_name(f".{target.name}.partial-{os.getpid()}")
    staging.mkdir()
    try:
        yield staging
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
