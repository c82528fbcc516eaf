"""Registers `.stkc` with Pillow: `Image.open("x.stkc")` decodes it (every quality level) with the
default model, and `image.save("x.stkc", quality=N)` encodes at level N (the model's default
level without `quality`; `target_bytes=` and `target_psnr=` as `stkcodec.compress`)."""

from __future__ import annotations

from PIL import Image, ImageFile

from . import bitstream


class StkcImageFile(ImageFile.ImageFile):
    format = "STKC"
    format_description = "stkc learned image codec"

    def _open(self) -> None:
        data = self.fp.read()
        header, _ = bitstream.parse(data, name=getattr(self.fp, "name", "image"))
        self._stkc_data = data
        self._size = (header.width, header.height)
        self._mode = header.mode  # RGB, or L for a gray original
        self.info["stkc"] = header.describe()
        self.tile = []

    def load(self):
        if self._im is None and getattr(self, "_stkc_data", None) is not None:
            from .codec import default_codec

            decoded = default_codec().decompress(self._stkc_data, getattr(self.fp, "name", "image") if self.fp else "image")
            decoded.load()
            self.im = decoded.im
            self._stkc_data = None
        return Image.Image.load(self)


def _save(image: Image.Image, fp, filename) -> None:
    from .codec import default_codec

    options = {key: image.encoderinfo[key] for key in ("quality", "target_bytes", "target_psnr")
               if image.encoderinfo.get(key) is not None}
    fp.write(default_codec().compress(image, **options))


def _accept(prefix: bytes) -> bool:
    return bitstream.looks_like_stkc(prefix)


def register() -> None:
    Image.register_open(StkcImageFile.format, StkcImageFile, _accept)
    Image.register_save(StkcImageFile.format, _save)
    Image.register_extension(StkcImageFile.format, ".stkc")
    Image.register_mime(StkcImageFile.format, "image/x-stkc")
