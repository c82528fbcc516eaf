"""The codecs `stkc bench` compares, each with the settings it is swept over.

Every classic codec runs through Pillow, in memory, swept over its quality setting with options
that favour it (stated in `ClassicCodec.settings`). stkc is an entry like them (`STKC`): its
settings are its model's quality levels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import features


@dataclass(frozen=True)
class ClassicCodec:
    """A Pillow codec with the options it is benchmarked at and its quality sweep."""

    name: str
    label: str
    pillow_format: str
    qualities: tuple[int, ...]
    options: dict = field(default_factory=dict)
    described: str = ""

    @property
    def settings(self) -> str:
        """The options in words, for the output: a reader should know what was compared."""
        return f"{self.described}, quality {self.qualities[0]}..{self.qualities[-1]} ({len(self.qualities)} settings)"


CLASSIC = {
    codec.name: codec
    for codec in (
        # Very low qualities matter: stkc files are a few hundred bytes, JPEG's floor is ~450.
        ClassicCodec("jpeg", "JPEG", "JPEG", (1, 3, 5, 8, 12, 18, 25, 35, 50, 65, 80, 95),
                     {"optimize": True, "subsampling": 2}, "optimize=True (Huffman tables), 4:2:0"),
        # WebP and AVIF in steps of 1 up to 10, where stkc's files lie: interpolating across a wide
        # step would overstate their bytes there (PSNR is concave in log-bytes).
        ClassicCodec("webp", "WebP", "WEBP", (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 15, 20, 30, 40, 50, 65, 80, 95),
                     {"method": 6}, "method=6 (slowest, smallest)"),
        # speed 6 costs ~15 ms a frame; speed 4 triples that for under 1% fewer bytes.
        ClassicCodec("avif", "AVIF", "AVIF", (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 15, 20, 30, 40, 50, 60, 75, 90),
                     {"speed": 6, "subsampling": "4:2:0", "max_threads": 1}, "speed=6, 4:2:0, one thread"),
        ClassicCodec("jxl", "JPEG XL", "JXL", (0, 5, 10, 15, 20, 30, 40, 50, 65, 80, 95),
                     {"effort": 7, "num_threads": 1, "use_container": False},
                     "effort=7, bare codestream, one thread"),
    )
}
@dataclass(frozen=True)
class StkcCodec:
    """stkc as a benchmarked codec: run through `Codec.compress_many`/`decompress_many` in batches
    of `batch` images, at each of the model's quality levels."""

    name: str = "stkc"
    label: str = "stkc"
    batch: int = 32
    described: str = "batched compress_many/decompress_many, file bytes incl. the header"

    def settings(self, levels: int) -> str:
        points = "one operating point" if levels == 1 else f"quality levels 1-{levels}"
        return f"{points}, {self.described}"


STKC = StkcCodec()
ALL_CODECS = (*CLASSIC, STKC.name)
LABELS = {**{name: codec.label for name, codec in CLASSIC.items()}, STKC.name: STKC.label}


def codec_available(name: str) -> tuple[bool, str | None]:
    """Whether this Pillow can encode `name`, and if not, why (a line for the user)."""
    if name == "jxl":
        try:
            import pillow_jxl  # noqa: F401  (importing registers the JXL format with Pillow)
        except ImportError:
            return False, "pillow-jxl-plugin is not installed (pip install 'stkc[jxl]')"
        return True, None
    feature = {"jpeg": "jpg", "webp": "webp", "avif": "avif"}[name]
    try:
        present = bool(features.check(feature))
    except (ValueError, KeyError):  # an older Pillow that does not know the feature at all
        present = False
    return (True, None) if present else (False, f"this Pillow ({features.version('PIL')}) lacks {feature} support")


def library_version(name: str) -> str | None:
    """The codec library's version, so results can be traced to what produced them."""
    if name == "jxl":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"pillow-jxl-plugin {version('pillow-jxl-plugin')}"
        except PackageNotFoundError:
            return None
    try:
        if name == "jpeg" and features.check_feature("libjpeg_turbo"):
            return f"libjpeg-turbo {features.version_feature('libjpeg_turbo')}"
        found = features.version({"jpeg": "jpg", "webp": "webp", "avif": "avif"}[name])
    except (ValueError, KeyError):
        return None
    return f"lib{name} {found}" if found else None
