"""Images <-> `.stkc` bytes: the tokenizer's windows (windows.py), the exact prior and the
enhancement layer, range coders and the container (bitstream.py)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from . import bitstream, rdo, zoo
from .bitstream import Header
from .coder import decode_grids, encode_grids, tile_layout
from .enhance_codec import EnhancementCoder
from .errors import BadInputError, ModelMismatchError, Option, StkcError
from .imageio import GRAY_MODES
from .metrics import psnr_rgb
from .windows import base_pictures, image_tokens, image_tokens_and_margins, token_images, window_count
from .zoo import CodecModel

MAX_SIDE = bitstream.MAX_SIDE  # the largest width and height a header holds


def colour_mode(image: Image.Image) -> int:
    """What a decoder should hand back: gray for a gray image (coded as RGB, decoded to L, so
    the tokenizer's faint tints never reach the user), RGB for everything else."""
    return bitstream.GRAY if image.mode in GRAY_MODES else bitstream.RGB


def as_rgb(image: Image.Image) -> Image.Image:
    """The image in RGB: itself when it is (never changed here), else a converted copy."""
    return image if image.mode == "RGB" else image.convert("RGB")


def _names(names: Sequence[str] | None, count: int, word: str) -> list[str]:
    if names is not None and len(names) != count:
        raise ValueError(f"{len(names)} names for {count} items")
    return list(names) if names is not None else [f"{word} {i}" for i in range(count)]


def _check_errors(errors: str) -> None:
    if errors not in ("raise", "collect"):
        raise ValueError(f"errors={errors!r}: 'raise' or 'collect'")


def each_alone_on_error(work: Callable[[list[int]], list], count: int) -> list:
    """`work(members)` over all `count` items; if it raises a StkcError, the items again one by
    one, so that one bad item does not sink the others: each item's result or its error."""
    def run(members: list[int]) -> list:
        try:
            return work(members)
        except StkcError as error:
            if len(members) == 1:
                return [error]
        return [result for member in members for result in run([member])]

    return run(list(range(count))) if count else []


@dataclasses.dataclass(frozen=True)
class Encoded:
    """One image's `.stkc` file and, when asked for, the RGB pixels (H, W, 3) uint8 it decodes to
    and those of its base layer (the level-1 picture; `pixels` itself at level 1)."""

    data: bytes
    pixels: np.ndarray | None
    base: np.ndarray | None = None


class Codec:
    """Compress and decompress with one codec model; reuse an instance for many images.

    Made with the default model (`None` or 'default'), it also decodes files written by any
    other shipped model, which it finds by the model id in their headers.
    """

    def __init__(self, model: CodecModel | str | None = None, *, max_pixels: int = bitstream.DEFAULT_MAX_PIXELS,
                 effort: int = rdo.DEFAULT_EFFORT) -> None:
        if effort not in rdo.EFFORT_LAMBDA:
            raise BadInputError(f"effort {effort!r} is not an encoder effort (valid: "
                                f"{', '.join(map(str, rdo.EFFORT_LAMBDA))})")
        self.model = model if isinstance(model, CodecModel) else CodecModel.load(model)
        self.max_pixels = max_pixels
        self.effort = effort  # how the encoder picks the base tokens (rdo.py); decoding ignores it
        self.follows_headers = model in (None, zoo.DEFAULT)
        self._others: dict[bytes, Codec] = {}

    def for_model(self, model_id: bytes, name: str = "input") -> "Codec":
        """The codec that decodes files of `model_id`: this one, or (default only) another shipped model."""
        if model_id == self.model.model_id:
            return self
        shipped = zoo.shipped_name(model_id)
        if shipped is None:
            raise ModelMismatchError(f"{name}: unknown model {model_id.hex()} (file damaged, or made by a model "
                                     f"that is not installed; this codec's is {self.model.model_id.hex()})")
        if not self.follows_headers:
            raise ModelMismatchError(f"{name}: made by shipped model {shipped} ({model_id.hex()}), "
                                     f"this one is {self.model.model_id.hex()} (pass ", Option("model", shipped), ")")
        if model_id not in self._others:
            self._others[model_id] = Codec(shipped, max_pixels=self.max_pixels, effort=self.effort)
        return self._others[model_id]

    def _by_model(self, parsed: list, names: list[str]) -> list[tuple["Codec", list[int]]]:
        """Indices of parsed files grouped by the codec that decodes them."""
        groups: dict[bytes, list[int]] = {}
        for index, (header, _) in enumerate(parsed):
            groups.setdefault(header.model_id, []).append(index)
        return [(self.for_model(model_id, names[members[0]]), members) for model_id, members in groups.items()]

    @property
    def levels(self) -> int:
        return self.model.levels

    def check_quality(self, quality: int) -> int:
        if not isinstance(quality, int) or not 1 <= quality <= self.levels:
            valid = "1" if self.levels == 1 else f"1 to {self.levels}"
            raise BadInputError(f"quality {quality!r} is not a level of this model (valid: {valid})")
        return quality

    def check_encodes(self, top: int) -> None:
        """Refuses to encode with a decode-only tokenizer, or above level 1 with a decode-only
        enhancement layer (encoders left out of the shipped files: checkpoint.decoding_payload);
        `top` is the highest level asked."""
        enhancer, name = self.model.enhancer, zoo.shipped_name(self.model.model_id) or "this model"
        if self.model.tokenizer.retired:
            raise BadInputError(f"{name} decodes only (its tokenizer's encoder was retired to keep the shipped models "
                                "small); compress with the default model")
        if top > 1 and enhancer is not None and enhancer.retired:
            raise BadInputError(f"{name} decodes every level but encodes level 1 only (its enhancement encoder was "
                                f"retired to keep the shipped models small); for levels 2 to {self.levels} use "
                                f"the default model")

    def compress_many(self, images: Sequence[Image.Image], *, quality: int | None = None,
                      target_bytes: int | None = None, target_psnr: float | None = None,
                      names: Sequence[str] | None = None, errors: str = "raise",
                      on_tiles: Callable[[int], None] | None = None) -> list:
        """PIL images of any mode -> `.stkc` bytes each. Gray images decode to gray (mode L),
        everything else to RGB; alpha is not kept. `on_tiles(n)` hears of every n steps done
        (`steps` says how many an image takes: tiles and tokenizer windows).

        `quality` is the level (1: the base alone, up to `levels`; None: the model's default).
        Or, per image, `target_bytes` picks the largest level whose file fits (level 1 if none
        does) and `target_psnr` the smallest level that reaches that PSNR in dB (the highest if
        none does), as cwebp's -size and -psnr.

        `names` name the images in errors (default "image 0", "image 1"...). `errors="collect"`:
        an image that cannot be coded gets its StkcError in its place, and the others are coded
        (a failed batch is tried again image by image); "raise" (default): the first error is raised."""
        coded = self.encode_many(images, quality=quality, target_bytes=target_bytes, target_psnr=target_psnr,
                                 names=names, errors=errors, on_tiles=on_tiles, reconstruct=False)
        return [result if isinstance(result, StkcError) else result.data for result in coded]

    def encode_many(self, images: Sequence[Image.Image], *, quality: int | None = None,
                    target_bytes: int | None = None, target_psnr: float | None = None,
                    names: Sequence[str] | None = None, errors: str = "raise",
                    on_tiles: Callable[[int], None] | None = None, reconstruct: bool = True) -> list:
        """As `compress_many`, each file an `Encoded`: its bytes and, with `reconstruct`, the RGB
        pixels it decodes to (the encoder's own reconstruction, which a decoder matches up to
        float rounding; what `domain.compare_with_webp` weighs). Reconstructing costs a
        tokenizer pass at level 1 and the enhancement decoder above it."""
        if target_bytes is not None and target_psnr is not None:
            raise BadInputError("give target_bytes= or target_psnr=, not both")
        if quality is not None and (target_bytes is not None or target_psnr is not None):
            raise BadInputError("give quality= or a target, not both")
        asked, quality = quality, self.check_quality(self.model.default_quality if quality is None else quality)
        self.check_encodes(self.levels if target_bytes is not None or target_psnr is not None else quality)
        names = _names(names, len(images), "image")
        if errors == "collect":
            return each_alone_on_error(
                lambda members: self.encode_many([images[i] for i in members], quality=asked,
                                                 target_bytes=target_bytes, target_psnr=target_psnr,
                                                 names=[names[i] for i in members], on_tiles=on_tiles,
                                                 reconstruct=reconstruct),
                len(images))
        _check_errors(errors)
        targeted = target_bytes is not None or target_psnr is not None
        results: list[Encoded | None] = [None] * len(images)
        with torch.inference_mode():
            for size, members in self._by_size(images, names).items():
                rgb = [as_rgb(images[i]) for i in members]
                grids, headers = self._base_layer(rgb, [colour_mode(images[i]) for i in members], on_tiles)
                if targeted:
                    chosen, bases = self._targeted(rgb, grids, headers, size, target_bytes, target_psnr, on_tiles,
                                                   reconstruct)
                elif quality > 1:
                    bases, files = self._enhancements(rgb, grids, headers, size, [quality], on_tiles, reconstruct)
                    chosen = [options[0] for options in files]
                else:
                    chosen = self._level_one(grids, headers, size, on_tiles, reconstruct)
                    bases = [pixels for _, pixels in chosen]
                for index, (data, pixels), base in zip(members, chosen, bases):
                    results[index] = Encoded(data, pixels, base if reconstruct else None)
        return results

    def _by_size(self, images: Sequence[Image.Image], names: Sequence[str]) -> dict[tuple[int, int], list[int]]:
        """Indices of the images by size, each size checked."""
        by_size: dict[tuple[int, int], list[int]] = {}
        for index, image in enumerate(images):
            name = names[index]
            if image.width > MAX_SIDE or image.height > MAX_SIDE:
                raise BadInputError(f"{name}: {image.width}x{image.height} has a side over {MAX_SIDE} pixels")
            if image.width * image.height > self.max_pixels:
                raise BadInputError(f"{name}: {image.width}x{image.height} pixels exceeds the limit of "
                                    f"{self.max_pixels} (raise it with ", Option("max_pixels"), ")")
            if image.width == 0 or image.height == 0:
                raise BadInputError(f"{name}: empty image")
            by_size.setdefault(image.size, []).append(index)
        return by_size

    def _base_layer(self, rgb: list[Image.Image], colours: list[int], on_tiles) -> tuple[list, list]:
        """RGB images of one size -> their token grids and (sealed header, base payload) each."""
        model = self.model
        width, height = rgb[0].size
        lam = rdo.EFFORT_LAMBDA[self.effort]
        if lam is None:
            grids, margins, choose = image_tokens(model.tokenizer, rgb, on_tiles), None, None
        else:  # the grids become the tokens the encoder chose
            (grids, margins), choose = image_tokens_and_margins(model.tokenizer, rgb, on_tiles), rdo.chooser(lam)
        payloads = encode_grids(model.exact_prior, grids, model.tile, margins=margins, choose=choose, on_tiles=on_tiles)
        headers = []
        for grid, payload, colour in zip(grids, payloads, colours):
            payload = payload.ljust(bitstream.min_payload_bytes(*grid.shape), b"\0")
            header = Header(model.model_id, width, height, model.tokenizer.config.patch_size,
                            model.tile[0], model.tile[1], len(payload), 0, colour=colour)
            headers.append((header.sealed(grid.numpy()), payload))
        return grids, headers

    def _enhancements(self, rgb, grids, headers, size, levels: list[int], on_tiles, reconstruct: bool = False):
        """Per image, (file bytes, decoded RGB pixels if `reconstruct`) at each quality level in
        `levels` (2 or more)."""
        # the encoder reads the base a tile at a time: a tall image's is computed band by band
        bases = (token_images if reconstruct else base_pictures)(self.model.tokenizer, grids, size, on_tiles)
        starts = [bitstream.symbols_crc_start(header.token_crc32) for header, _ in headers]
        coded = self.enhancement.encode(rgb, bases, [q - 2 for q in levels],
                                        base_crcs=starts, tokens=[grid.numpy() for grid in grids],
                                        reconstruct=reconstruct, on_tiles=on_tiles)
        files = []
        for (header, payload), per_level in zip(headers, coded):
            options = []
            for quality, result in zip(levels, per_level):
                segment = bitstream.Enhancement(quality, len(result.payload), 0, result.payload).sealed(result.crc32)
                options.append((dataclasses.replace(header, enhancement=segment).pack_file(payload), result.pixels))
            files.append(options)
        return [np.asarray(base) for base in bases] if reconstruct else [None] * len(bases), files

    def _level_one(self, grids, headers, size, on_tiles, reconstruct: bool) -> list[tuple[bytes, np.ndarray | None]]:
        """Per image, its level-1 file and, if `reconstruct`, the base picture it decodes to."""
        bases = token_images(self.model.tokenizer, grids, size, on_tiles) if reconstruct else [None] * len(grids)
        return [(header.pack_file(payload), None if base is None else np.asarray(base))
                for (header, payload), base in zip(headers, bases)]

    def _candidates(self, rgb, grids, headers, size, on_tiles, reconstruct: bool) -> list[list[tuple[bytes, object]]]:
        """Per image, (file, decoded RGB pixels or None) at every level, 1 first."""
        if self.levels == 1:
            return [[option] for option in self._level_one(grids, headers, size, None, reconstruct)]
        base_files = [header.pack_file(payload) for header, payload in headers]
        bases, files = self._enhancements(rgb, grids, headers, size, list(range(2, self.levels + 1)), on_tiles,
                                          reconstruct=reconstruct)
        return [[(base_file, base)] + options for base_file, base, options in zip(base_files, bases, files)]

    def _targeted(self, rgb, grids, headers, size, target_bytes, target_psnr, on_tiles,
                  reconstruct: bool) -> tuple[list[tuple[bytes, np.ndarray | None]], list]:
        """Per image, the level that meets the target (see compress_many): (file, pixels or None);
        and per image its base picture (or None)."""
        chosen, every = [], self._candidates(rgb, grids, headers, size, on_tiles,
                                              reconstruct=reconstruct or target_psnr is not None)
        for image, candidates in zip(rgb, every):
            if target_bytes is not None:
                fitting = [option for option in candidates if len(option[0]) <= target_bytes]
                chosen.append(fitting[-1] if fitting else candidates[0])
            else:
                reference = np.asarray(image)
                reaching = [option for option in candidates if psnr_rgb(reference, option[1]) >= target_psnr]
                chosen.append(reaching[0] if reaching else candidates[-1])
        return chosen, [candidates[0][1] for candidates in every]

    def every_level(self, images: Sequence[Image.Image]) -> list[list[tuple[bytes, np.ndarray]]]:
        """Per image, (`.stkc` bytes, the RGB pixels (H, W, 3) uint8 they decode to) at every quality
        level, 1 first: one encoder pass for all of them (what target_psnr= weighs; benchmarks).
        The pixels are the encoder's own reconstruction, which a decoder matches up to float
        rounding (formats/stkc.md, Pixels)."""
        self.check_encodes(self.levels)
        results: list = [None] * len(images)
        with torch.inference_mode():
            for size, members in self._by_size(images, _names(None, len(images), "image")).items():
                rgb = [as_rgb(images[i]) for i in members]
                grids, headers = self._base_layer(rgb, [colour_mode(images[i]) for i in members], None)
                for index, candidates in zip(members, self._candidates(rgb, grids, headers, size, None, True)):
                    results[index] = candidates
        return results

    @functools.cached_property
    def enhancement(self) -> EnhancementCoder:
        if self.model.enhancer is None:
            raise BadInputError("this model has one quality level")
        return EnhancementCoder(self.model.enhancer, self.model.tile)

    def compress(self, image: Image.Image, **options) -> bytes:
        """One image -> `.stkc` bytes; `options` as compress_many's."""
        return self.compress_many([image], **options)[0]

    def tiles(self, width: int, height: int) -> int:
        """How many tiles of the prior an image of this size codes as."""
        return len(tile_layout(*self.model.tokenizer.grid_shape(height, width), *self.model.tile))

    def steps(self, width: int, height: int, quality: int, *, encoding: bool, reconstruct: bool = False) -> int:
        """How many times `on_tiles` hears of an image of this size coded at `quality` (its
        units): the prior's tiles, the tokenizer's windows and, above level 1, the enhancement's
        tiles (for progress: every stage a user waits for). `reconstruct`: encoding with
        `encode_many`'s pixels (at level 1 a second tokenizer pass)."""
        windows = window_count(*self.model.tokenizer.grid_shape(height, width))
        layered = quality > 1
        tokenizer_passes = (1 + (layered or reconstruct)) if encoding else 1  # encoding: tokens, then the base picture
        return self.tiles(width, height) * (1 + layered) + windows * tokenizer_passes

    def tokens_many(self, files: Sequence[bytes], names: Sequence[str] | None = None, *,
                    on_tiles: Callable[[int], None] | None = None) -> list[tuple[Header, torch.Tensor]]:
        """`.stkc` bytes -> (header, token grid) each, checksum verified."""
        return self._per_model(files, names, functools.partial(Codec._own_tokens, on_tiles=on_tiles))

    def decompress_many(self, files: Sequence[bytes], names: Sequence[str] | None = None, *,
                        errors: str = "raise", on_tiles: Callable[[int], None] | None = None) -> list:
        """`.stkc` bytes -> PIL images (RGB, or L for a gray original); `on_tiles(n)` hears of
        every n steps done (`steps`). `errors="collect"`: a file that cannot be decoded gets its
        StkcError in its place, the others are decoded (see compress_many)."""
        if errors == "collect":
            names = _names(names, len(files), "input")
            return each_alone_on_error(
                lambda members: self.decompress_many([files[i] for i in members], [names[i] for i in members],
                                                     on_tiles=on_tiles), len(files))
        _check_errors(errors)
        return self._per_model(files, names, functools.partial(Codec._own_images, on_tiles=on_tiles))

    def _per_model(self, files: Sequence[bytes], names: Sequence[str] | None, work) -> list:
        """Headers parsed and checked, then `work(codec, parsed, names)` once for each model that
        `files` need; results in input order."""
        names = _names(names, len(files), "input")
        parsed = [bitstream.parse(data, max_pixels=self.max_pixels, name=name) for data, name in zip(files, names)]
        results: list = [None] * len(files)
        for codec, members in self._by_model(parsed, names):
            for index, result in zip(members, work(codec, [parsed[i] for i in members], [names[i] for i in members])):
                results[index] = result
        return results

    def _own_tokens(self, parsed: list, names: list[str], on_tiles=None) -> list[tuple[Header, torch.Tensor]]:
        for (header, _), name in zip(parsed, names):
            self._check(header, name)
        groups: dict[tuple, list[int]] = {}
        for index, (header, _) in enumerate(parsed):
            groups.setdefault((header.grid, header.tile_rows, header.tile_cols), []).append(index)
        grids: list[torch.Tensor | None] = [None] * len(parsed)
        with torch.inference_mode():
            for (grid, tile_rows, tile_cols), members in groups.items():
                decoded = decode_grids(self.model.exact_prior, [parsed[i][1] for i in members], [grid] * len(members),
                                       (tile_rows, tile_cols), names=[names[i] for i in members], on_tiles=on_tiles)
                for index, tokens in zip(members, decoded):
                    header = parsed[index][0]
                    if header.checksum(tokens.numpy()) != header.token_crc32:
                        raise BadInputError(f"{names[index]}: fails its checksum (damaged file, or this machine "
                                            "computes different probabilities than the encoder's)")
                    grids[index] = tokens
        return [(header, grid) for (header, _), grid in zip(parsed, grids)]

    def _own_images(self, parsed: list, names: list[str], on_tiles=None) -> list[Image.Image]:
        decoded = self._own_tokens(parsed, names, on_tiles)
        images: list[Image.Image | None] = [None] * len(parsed)
        groups: dict[tuple[int, int], list[int]] = {}
        for index, (header, _) in enumerate(decoded):
            groups.setdefault((header.width, header.height), []).append(index)
        with torch.inference_mode():
            for size, members in groups.items():
                bases = token_images(self.model.tokenizer, [decoded[i][1] for i in members], size, on_tiles)
                for index, image in zip(members, bases):
                    images[index] = image
                self._enhance([decoded[i][0] for i in members], bases, [decoded[i][1] for i in members],
                              [names[i] for i in members], members, images, on_tiles)
        for index, (header, _) in enumerate(decoded):
            if images[index].mode != header.mode:
                images[index] = images[index].convert(header.mode)
        return images

    def _enhance(self, headers: list[Header], bases: list[Image.Image], grids: list[torch.Tensor], names: list[str],
                 slots: list[int], images: list, on_tiles) -> None:
        """Decode the enhancement of each file that has one, into `images[slot]`."""
        layered = [k for k, header in enumerate(headers) if header.enhancement is not None]
        if not layered:
            return
        for k in layered:
            if headers[k].quality > self.levels:
                raise BadInputError(f"{names[k]}: quality level {headers[k].quality}, this model codes 1 to {self.levels}")
        crcs = self.enhancement.decode(  # enhances bases[k], images[slots[k]], in place
            [headers[k].enhancement.payload for k in layered], [bases[k] for k in layered],
            [headers[k].quality - 2 for k in layered],
            base_crcs=[bitstream.symbols_crc_start(headers[k].token_crc32) for k in layered],
            names=[names[k] for k in layered], tokens=[grids[k].numpy() for k in layered], on_tiles=on_tiles)
        for k, crc in zip(layered, crcs):
            if headers[k].enhancement.sealed(crc).crc32 != headers[k].enhancement.crc32:
                raise BadInputError(f"{names[k]}: enhancement fails its checksum (damaged file, or this machine "
                                    "computes different probabilities than the encoder's)")
            images[slots[k]] = bases[k]

    def decompress(self, data: bytes, name: str = "input") -> Image.Image:
        return self.decompress_many([data], [name])[0]

    def _check(self, header: Header, name: str) -> None:
        model = self.model
        if header.patch_size != model.tokenizer.config.patch_size:
            raise BadInputError(f"{name}: patch size {header.patch_size} does not fit the model's "
                                f"{model.tokenizer.config.patch_size}")
        if header.tile_rows > model.prior.config.max_rows or header.tile_cols > model.prior.config.max_cols:
            raise BadInputError(f"{name}: tile {header.tile_rows}x{header.tile_cols} exceeds the prior's positions")


@functools.cache
def default_codec() -> Codec:
    """The shipped default model, loaded once per process."""
    return Codec()


def compress(image: Image.Image, **options) -> bytes:
    """One PIL image -> `.stkc` bytes, with the shipped default model; `quality=N` (1 to the
    model's levels), `target_bytes=B` or `target_psnr=P` as `Codec.compress_many`."""
    return default_codec().compress(image, **options)


def decompress(data: bytes) -> Image.Image:
    """`.stkc` bytes -> a PIL image (RGB, or L for a gray original) of the original size,
    decoded by the shipped model that wrote it."""
    return default_codec().decompress(data)
