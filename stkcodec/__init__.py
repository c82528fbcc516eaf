"""stkc: a learned image codec for SuperTuxKart frames.

    import stkcodec
    data = stkcodec.compress(image)        # PIL image -> .stkc bytes (default model, default level)
    data = stkcodec.compress(image, quality=4)  # a sharper, larger file (levels 1 to the model's)
    image = stkcodec.decompress(data)      # .stkc bytes -> PIL image
    Image.open("frame.stkc")               # Pillow reads .stkc once stkcodec is imported
"""

__version__ = "0.1.0"

from .errors import BadInputError, ModelMismatchError, OutputError, StkcError  # noqa: E402
from .pillow_plugin import register as _register_pillow  # noqa: E402

_register_pillow()


def compress(image, **options):
    """One PIL image -> `.stkc` bytes, with the shipped default model (loaded once): `quality=N`
    (1, the base layer alone, up to the model's levels; default: the model's default level), or
    `target_bytes=B` / `target_psnr=P` to pick a level per image."""
    from .codec import compress as run

    return run(image, **options)


def decompress(data: bytes):
    """`.stkc` bytes -> a PIL image (RGB, or L for a gray original) of the original size, decoded
    by the shipped model that wrote it."""
    from .codec import decompress as run

    return run(data)


def compress_many(images):
    """Many PIL images -> `.stkc` bytes each (batched; same bytes as one by one)."""
    from .codec import default_codec

    return default_codec().compress_many(images)


def decompress_many(files):
    """Many `.stkc` byte strings -> PIL images (batched)."""
    from .codec import default_codec

    return default_codec().decompress_many(files)


__all__ = ["BadInputError", "ModelMismatchError", "OutputError", "StkcError", "__version__",
           "compress", "compress_many", "decompress", "decompress_many"]
