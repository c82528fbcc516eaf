"""Reading images of any mode into RGB or L, and encoding decoded images (outputs.py writes them)."""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import BadInputError, Option, OutputError

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


def open_unlimited(file) -> Image.Image:
    """Image.open without Pillow's decompression-bomb check: `open_image` applies its own
    `max_pixels` to the size before any pixel is decoded, so a raised limit is the real one
    (Pillow's alone refuses above 179 Mpx, whatever --max-pixels says); domain.py reads back the
    WebP files it made of an image already admitted."""
    with _PILLOW_LIMIT:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(file)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def image_pixels(data: bytes) -> int:
    """How many pixels an image file holds, from its header alone (0 where Pillow cannot tell:
    `open_image` then says why)."""
    try:
        with open_unlimited(io.BytesIO(data)) as image:
            return image.width * image.height
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        return 0


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
        with file, open_unlimited(file) as image:
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
