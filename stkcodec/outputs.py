"""Writing outputs safely: every check that can run before the work, and writes that leave a
file whole or absent (a temporary file in the same folder, then a rename).

Nothing the user had is replaced without `force`, and an input is never its own output.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .errors import OutputError, exists_error


def cannot_write(path: Path | str, error: OSError) -> OutputError:
    """The one line for an OS refusal: `cannot write ro/a.stkc: read-only file system`."""
    return OutputError(f"cannot write {path}: {(error.strerror or str(error)).lower()}")


def check_writable(path: Path, *, force: bool, inputs: Sequence[str | Path] = (), make_folder: bool = False) -> None:
    """Refuse, before any long work, an output that is one of `inputs` (by any path, `force` or not),
    exists (without `force`), is a folder, or whose folder cannot take a new file (with
    `make_folder`, a missing folder is created first, as training's outputs and run folders are).

    The folder is probed by creating and removing a file in it: only trying tells, since root
    ignores permission bits while /proc, read-only mounts and a path under a file refuse anyway.
    """
    path = Path(path)
    if make_folder:
        make_writable_folder(path.parent, path)
    refuse_existing(path, force=force, inputs=inputs)
    try:
        with tempfile.TemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".part"):
            pass
    except OSError as error:
        raise cannot_write(path, error) from None


def make_writable_folder(folder: Path, shown: Path | None = None) -> None:
    """Create `folder` if need be and make sure a file can be written in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise cannot_write(shown or folder, error) from None


def refuse_existing(path: Path, *, force: bool, inputs: Sequence[str | Path] = ()) -> None:
    """check_writable without the probe: what the path's name alone says."""
    if path.is_dir():
        raise OutputError(f"{path}: is a folder")
    if path.exists():
        source = next((source for source in inputs if source != "-" and same_file(path, source)), None)
        if source is not None:
            raise OutputError(f"{path}: is the input {source} (choose another output)")
        if not force:
            raise exists_error(path)
    if not path.parent.exists():
        raise OutputError(f"{path}: folder {path.parent} does not exist")


def same_file(path: Path, other: str | Path) -> bool:
    try:
        return os.path.samefile(path, other)
    except OSError:  # either one absent or unreadable: not the same file
        return False


def default_file_mode() -> int:
    """0666 less the process umask: the mode open() would have given a new file."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, data: bytes, *, force: bool) -> None:
    """Write `data` to `path` via a temporary file and a rename: the output is whole or absent.
    An OS refusal (read-only, full disk) is an OutputError naming `path`."""
    refuse_existing(path, force=force)
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    except OSError as error:
        raise cannot_write(path, error) from None
    try:
        os.chmod(temporary, default_file_mode())  # mkstemp's 0600 would surprise whoever shares the file
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        if not force and path.exists():
            raise exists_error(path)
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise cannot_write(path, error) from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
