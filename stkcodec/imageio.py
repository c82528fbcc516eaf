"""Reading images of any mode into RGB, and writing outputs safely (temporary file + rename)."""

from __future__ import annotations

import io
import os
import re
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import BadInputError, Option, OutputError, exists_error

HIGH_DEPTH_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
INTERNAL_REPR = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")  # `<_io.BytesIO object at 0x7f...>` in Pillow's messages


GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}


def to_8bit(image: Image.Image) -> Image.Image:
    """Any Pillow image -> 8-bit gray (L) for a gray one, else 8-bit RGB: EXIF orientation
    applied, 16-bit and float scaled to 8 bits, alpha dropped (the colour channels are kept as
    stored; stkc codes opaque images, and a gray one decodes gray)."""
    image = ImageOps.exif_transpose(image)
    if image.mode in HIGH_DEPTH_MODES:
        array = np.asarray(image, dtype=np.float64)
        peak = 1.0 if image.mode == "F" and array.max(initial=0) <= 1.0 else (255.0 if image.mode == "F" else 65535.0)
        if image.mode == "I" and array.max(initial=0) <= 255:
            peak = 255.0
        array = np.clip(np.round(array / peak * 255), 0, 255).astype(np.uint8)
        image = Image.fromarray(array, "L")
    return image.convert("L" if image.mode in GRAY_MODES else "RGB")


_PILLOW_LIMIT = threading.Lock()


def _opened(file) -> Image.Image:
    """Image.open without Pillow's decompression-bomb check: `open_image` applies its own
    `max_pixels` to the size before any pixel is decoded, so a raised limit is the real one
    (Pillow's alone refuses above 179 Mpx, whatever --max-pixels says)."""
    with _PILLOW_LIMIT:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(file)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def open_image(source: str | Path | bytes, *, max_pixels: int, name: str | None = None,
               on_warning: Callable[[str], None] | None = None) -> Image.Image:
    """Open and fully decode an image (path or bytes) as RGB, or L for a gray one, refusing more
    than `max_pixels`. An animated or multi-page file gives its first frame, and says so to
    `on_warning`."""
    name = name or str(source if not isinstance(source, bytes) else "stdin")
    try:
        file = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")
    except FileNotFoundError:
        raise BadInputError(f"{name}: no such file") from None
    except OSError as error:
        raise BadInputError(f"{name}: cannot open ({error.strerror or error})") from None
    try:
        with file, _opened(file) as image:
            if image.width * image.height > max_pixels:
                raise BadInputError(f"{name}: {image.width}x{image.height} pixels exceeds the limit of {max_pixels} "
                                    "(raise it with ", Option("max_pixels"), ")")
            image.load()
            frames = getattr(image, "n_frames", 1)
            if frames > 1 and on_warning is not None:
                on_warning(f"{name}: frame 1 of {frames} coded (the others are dropped)")
            return to_8bit(image)
    except Image.DecompressionBombError as error:
        raise BadInputError(f"{name}: refused as a decompression bomb ({error})") from None
    except UnidentifiedImageError:  # its message names a BytesIO object, which tells a user nothing
        raise BadInputError(f"{name}: not an image Pillow can read") from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        detail = INTERNAL_REPR.sub("", str(error).split("\n")[0]).strip() or type(error).__name__
        raise BadInputError(f"{name}: not an image Pillow can read ({detail})") from None


def cannot_write(path: Path | str, error: OSError) -> OutputError:
    """The one line for an OS refusal: `cannot write ro/a.stkc: read-only file system`."""
    return OutputError(f"cannot write {path}: {(error.strerror or str(error)).lower()}")


def check_writable(path: Path, *, force: bool, inputs: Sequence[str | Path] = ()) -> None:
    """Refuse, before any long work, an output that is one of `inputs` (by any path, `force` or not),
    exists (without `force`), is a folder, or whose folder cannot take a new file.

    The folder is probed by creating and removing a file in it: only trying tells, since root
    ignores permission bits while /proc, read-only mounts and a path under a file refuse anyway.
    """
    refuse_existing(path, force=force, inputs=inputs)
    try:
        with tempfile.TemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".part"):
            pass
    except OSError as error:
        raise cannot_write(path, error) from None


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


def image_format(suffix: str, name: str = "output") -> str:
    """The Pillow format a file suffix names (PNG when unknown), refusing .stkc: a decoded image
    written back as .stkc would be a second, lossier compression."""
    found = Image.registered_extensions().get(suffix.lower(), "PNG")
    if found == "STKC":
        raise OutputError(f"{name}: cannot write a decoded image as .stkc (use `stkc compress`)")
    return found


def encode_image(image: Image.Image, suffix: str) -> bytes:
    """The bytes of `image` in the format its file suffix names (PNG when unknown)."""
    format_name = image_format(suffix)
    buffer = io.BytesIO()
    options = {"quality": 95} if format_name in {"JPEG", "WEBP"} else {}
    try:
        image.save(buffer, format=format_name, **options)
    except (OSError, ValueError, KeyError) as error:
        raise OutputError(f"cannot write {format_name} ({error})") from None
    return buffer.getvalue()
