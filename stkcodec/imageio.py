"""Reading images of any mode into RGB, and writing outputs safely (temporary file + rename)."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .errors import BadInputError, OutputError

HIGH_DEPTH_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N", "F"}


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow image -> 8-bit RGB: EXIF orientation applied, 16-bit and float scaled to 8 bits,
    alpha dropped (the colour channels are kept as stored; stkc codes opaque RGB)."""
    image = ImageOps.exif_transpose(image)
    if image.mode in HIGH_DEPTH_MODES:
        array = np.asarray(image, dtype=np.float64)
        peak = 1.0 if image.mode == "F" and array.max(initial=0) <= 1.0 else (255.0 if image.mode == "F" else 65535.0)
        if image.mode == "I" and array.max(initial=0) <= 255:
            peak = 255.0
        array = np.clip(np.round(array / peak * 255), 0, 255).astype(np.uint8)
        image = Image.fromarray(array, "L")
    return image.convert("RGB")


def open_image(source: str | Path | bytes, *, max_pixels: int, name: str | None = None) -> Image.Image:
    """Open and fully decode an image (path or bytes) as RGB, refusing more than `max_pixels`."""
    name = name or str(source if not isinstance(source, bytes) else "stdin")
    try:
        file = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")
    except FileNotFoundError:
        raise BadInputError(f"{name}: no such file") from None
    except OSError as error:
        raise BadInputError(f"{name}: cannot open ({error.strerror or error})") from None
    try:
        with file, Image.open(file) as image:
            if image.width * image.height > max_pixels:
                raise BadInputError(f"{name}: {image.width}x{image.height} pixels exceeds the limit of {max_pixels} "
                                    "(raise it with --max-pixels)")
            image.load()
            return to_rgb(image)
    except Image.DecompressionBombError as error:
        raise BadInputError(f"{name}: refused as a decompression bomb ({error})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise BadInputError(f"{name}: not an image Pillow can read ({str(error).splitlines()[0] if str(error) else type(error).__name__})") from None


def check_writable(path: Path, *, force: bool) -> None:
    if path.exists() and not force:
        raise OutputError(f"{path}: exists (use --force to replace it)")
    if path.exists() and path.is_dir():
        raise OutputError(f"{path}: is a folder")
    if not path.parent.exists():
        raise OutputError(f"{path}: folder {path.parent} does not exist")


def default_file_mode() -> int:
    """0666 less the process umask: the mode open() would have given a new file."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, data: bytes, *, force: bool) -> None:
    """Write `data` to `path` via a temporary file and a rename: the output is whole or absent."""
    check_writable(path, force=force)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        os.chmod(temporary, default_file_mode())  # mkstemp's 0600 would surprise whoever shares the file
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        if not force and path.exists():
            raise OutputError(f"{path}: exists (use --force to replace it)")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def encode_image(image: Image.Image, suffix: str) -> bytes:
    """The bytes of `image` in the format its file suffix names (PNG when unknown)."""
    formats = Image.registered_extensions()
    image_format = formats.get(suffix.lower(), "PNG")
    if image_format == "STKC":
        raise OutputError("cannot write a decoded image as .stkc (use `stkc compress`)")
    buffer = io.BytesIO()
    options = {"quality": 95} if image_format in {"JPEG", "WEBP"} else {}
    try:
        image.save(buffer, format=image_format, **options)
    except (OSError, ValueError, KeyError) as error:
        raise OutputError(f"cannot write {image_format} ({error})") from None
    return buffer.getvalue()
