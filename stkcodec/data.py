"""Training data: folders of images decoded once into a uint8 cache, and token grids.

Both sources hand the training loop random batches; each DDP process samples from its own
shard (every `world`-th item starting at its `rank`).
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from .errors import BadInputError
from .outputs import atomic_write

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm", ".avif"}
CROP = (100, 150)  # (H, W) of a training crop: one SuperTuxKart frame


def spread(count: int, limit: int | None) -> list[int]:
    """Indices of `limit` items evenly spaced over `count`, in order, from the first (all of them
    when `limit` is None or at least `count`). A folder sorted by name is sorted by track, so its
    first N frames are one track's, not a sample of the folder."""
    if limit is None or limit >= count:
        return list(range(count))
    return [i * count // limit for i in range(limit)]


def find_images(folder: str | Path) -> list[Path]:
    """Every image file under `folder`, recursively, in a stable order."""
    root = Path(folder)
    if not root.is_dir():
        raise BadInputError(f"{folder}: not a folder of images")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise BadInputError(f"{folder}: no images found")
    return paths


def find_frames(folder: str | Path | None, limit: int | None = None) -> list[Path]:
    """The images of `folder` (recursive), or the shipped sample frames; `limit` of them, spread
    evenly over the sorted list (see spread)."""
    if folder is None:
        samples = resources.files("stkcodec") / "samples"
        paths = sorted(Path(str(p)) for p in samples.iterdir() if p.name.endswith(".png"))
    else:
        paths = find_images(folder)
    return [paths[i] for i in spread(len(paths), limit)]


def cache_dir() -> Path:
    """Where decoded training frames are cached: $STKC_CACHE, else $XDG_CACHE_HOME/stkc or ~/.cache/stkc."""
    base = os.environ.get("STKC_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "stkc")
    return Path(base).expanduser()


def _load_frame(path: Path, crop: tuple[int, int]) -> np.ndarray:
    """Decode one image to RGB uint8 (H, W, 3), at least `crop` in size, at most 4× it."""
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image).convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise BadInputError(f"{path}: cannot read image ({error})") from None
    ch, cw = crop
    if image.height > 4 * ch and image.width > 4 * cw:
        scale = max(4 * ch / image.height, 4 * cw / image.width)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
    array = np.asarray(image)
    pad_h, pad_w = max(0, ch - array.shape[0]), max(0, cw - array.shape[1])
    if pad_h or pad_w:
        array = np.pad(array, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return array


def spread_frames(folder: str | Path, limit: int) -> torch.Tensor:
    """`limit` frames spread over the sorted images under `folder`, cropped to the training crop,
    read without decoding the rest: (N, 3, H, W) float in [0, 1]."""
    paths = find_images(folder)
    if not paths:
        raise BadInputError(f"{folder}: no images found")
    frames = [_load_frame(paths[i], CROP) for i in spread(len(paths), limit)]
    ch, cw = min(f.shape[0] for f in frames), min(f.shape[1] for f in frames)
    return torch.from_numpy(np.stack([f[:ch, :cw] for f in frames])).permute(0, 3, 1, 2).float() / 255


class ImageFolder:
    """Images of a folder, decoded once (cached on disk), served as random float crops.

    An image that cannot be read is skipped with a message to `on_skip` (default: a logged
    warning) and counted in `describe()`; with `strict`, it stops everything instead.
    """

    def __init__(self, folder: str | Path, *, crop: tuple[int, int] = CROP, cache: bool = True, strict: bool = False,
                 on_skip: Callable[[str], None] | None = None) -> None:
        self.folder = str(folder)
        self.crop = crop
        self.strict = strict
        found = find_images(folder)
        self.frames, skipped = self._load(found, cache, on_skip or logging.getLogger(__name__).warning)
        self.skipped = [found[i] for i in skipped]
        unreadable = set(self.skipped)
        self.paths = [path for path in found if path not in unreadable]  # one per frame
        if not self.paths:
            raise BadInputError(f"{folder}: no readable images ({len(found)} found)")

    def _load(self, paths: list[Path], cache: bool, on_skip) -> tuple[list[np.ndarray] | np.ndarray, list[int]]:
        key = hashlib.sha256(repr(self.crop).encode())
        for path in paths:
            stat = path.stat()
            key.update(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
        cache_file = cache_dir() / f"frames-{key.hexdigest()[:16]}.npz"
        if cache and cache_file.exists():
            with np.load(cache_file) as stored:
                skipped = stored["skipped"].tolist() if "skipped" in stored else []
                if skipped and self.strict:
                    raise BadInputError(f"{paths[skipped[0]]}: cannot read image (cached as unreadable)")
                for index in skipped:
                    on_skip(f"{paths[index]}: unreadable, skipped")
                if "frames" in stored:
                    return stored["frames"], skipped
                return [stored[k] for k in sorted((k for k in stored if k.isdigit()), key=int)], skipped
        frames, skipped = [], []
        for index, path in enumerate(paths):
            try:
                frames.append(_load_frame(path, self.crop))
            except BadInputError as error:
                if self.strict:
                    raise
                on_skip(f"{error}: skipped")
                skipped.append(index)
        if frames and len({frame.shape for frame in frames}) == 1:
            frames = np.stack(frames)  # (N, H, W, 3): one block of memory
        if cache:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            buffer = io.BytesIO()
            arrays = {"frames": frames} if isinstance(frames, np.ndarray) else {str(i): f for i, f in enumerate(frames)}
            np.savez(buffer, skipped=np.array(skipped, dtype=np.int64), **arrays)
            # whole or absent: DDP processes build the same cache at the same time
            atomic_write(cache_file, buffer.getvalue(), force=True)
        return frames, skipped

    def __len__(self) -> int:
        return len(self.frames)

    def describe(self) -> dict:
        return {"folder": os.path.abspath(self.folder), "images": len(self), "skipped": len(self.skipped),
                "strict": self.strict}

    def sample(self, batch_size: int, generator: torch.Generator, *, rank: int = 0, world: int = 1) -> torch.Tensor:
        """A random batch (B, 3, H, W) float in [0, 1]: random crops, random horizontal flips."""
        shard = torch.arange(rank, len(self), world)
        picks = shard[torch.randint(len(shard), (batch_size,), generator=generator)].tolist()
        ch, cw = self.crop
        batch = np.empty((batch_size, ch, cw, 3), dtype=np.uint8)
        for i, index in enumerate(picks):
            frame = self.frames[index]
            top = int(torch.randint(frame.shape[0] - ch + 1, (1,), generator=generator))
            left = int(torch.randint(frame.shape[1] - cw + 1, (1,), generator=generator))
            crop = frame[top : top + ch, left : left + cw]
            batch[i] = crop[:, ::-1] if torch.rand((), generator=generator) < 0.5 else crop
        return torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255

    def batches(self, batch_size: int, *, limit: int | None = None):
        """Whole frames in order (for evaluation), `limit` of them spread over the folder:
        (B, 3, H, W) float batches."""
        picks = spread(len(self), limit)
        for start in range(0, len(picks), batch_size):
            chunk = [self.frames[i] for i in picks[start : start + batch_size]]
            if len({c.shape for c in chunk}) > 1:
                ch, cw = self.crop
                chunk = [c[:ch, :cw] for c in chunk]
            yield torch.from_numpy(np.stack(chunk)).permute(0, 3, 1, 2).float() / 255


class TokenGrids:
    """Token grids from `stkc tokenize`, served as random crops of the grid (no flips:
    a flipped image does not have flipped tokens)."""

    def __init__(self, tokens: torch.Tensor, *, source: dict, crop: tuple[int, int] | None = None) -> None:
        self.tokens = tokens  # (N, h, w) int64
        self.source = source
        self.crop = crop or tuple(tokens.shape[1:])

    def __len__(self) -> int:
        return len(self.tokens)

    def describe(self) -> dict:
        return {**self.source, "grids": len(self)}

    def sample(self, batch_size: int, generator: torch.Generator, *, rank: int = 0, world: int = 1) -> torch.Tensor:
        shard = torch.arange(rank, len(self), world)
        picks = shard[torch.randint(len(shard), (batch_size,), generator=generator)]
        ch, cw = self.crop
        top = int(torch.randint(self.tokens.shape[1] - ch + 1, (1,), generator=generator))
        left = int(torch.randint(self.tokens.shape[2] - cw + 1, (1,), generator=generator))
        return self.tokens[picks, top : top + ch, left : left + cw]

    def batches(self, batch_size: int, *, limit: int | None = None):
        """Grids in order, `limit` of them spread over the file."""
        picks = torch.tensor(spread(len(self), limit), dtype=torch.long)
        for start in range(0, len(picks), batch_size):
            yield self.tokens[picks[start : start + batch_size]]


TOKENS_FORMAT = "stkc-tokens"
TOKENS_VERSION = 1


def tokenize_folder(tokenizer, folder: str | Path, *, batch_size: int = 64, mirrored: bool = False,
                    on_batch=None) -> dict:
    """Token grids of every image under `folder` (frames cropped to the training crop). With
    `mirrored`, then those of every image flipped left to right: new grids for a prior to learn
    from (a flipped image's tokens are not its tokens flipped, so the prior cannot flip grids)."""
    images = ImageFolder(folder, cache=False)
    dtype = torch.int16 if tokenizer.codebook_size <= 2**15 else torch.int32
    grids = []
    with torch.inference_mode():
        for flip in (False, True) if mirrored else (False,):
            for batch in images.batches(batch_size):
                grids.append(tokenizer.encode_index(batch.flip(-1) if flip else batch).to(dtype))
                if on_batch is not None:
                    on_batch(len(batch))
    root = Path(folder)
    paths = [str(p.relative_to(root)) for p in images.paths]
    return {
        "format": TOKENS_FORMAT,
        "format_version": TOKENS_VERSION,
        "tokenizer_id": tokenizer.model_id,
        "vocab_size": tokenizer.codebook_size,
        "tokens": torch.cat(grids),
        "paths": paths * 2 if mirrored else paths,  # the grid at index i is of paths[i]...
        "mirrored": [False] * len(paths) + [True] * len(paths) if mirrored else [False] * len(paths),  # ...flipped?
        "source": os.path.abspath(folder),
    }


def load_tokens(path: str | Path, *, tokenizer_id: str | None = None) -> TokenGrids:
    """Token grids written by `stkc tokenize`; refuses tokens of another tokenizer."""
    from .checkpoint import read_payload

    payload = read_payload(path)
    if not isinstance(payload, dict) or payload.get("format") != TOKENS_FORMAT:
        raise BadInputError(f"{path}: not a stkc tokens file")
    if payload.get("format_version") != TOKENS_VERSION:
        raise BadInputError(f"{path}: tokens format version {payload.get('format_version')!r}, expected {TOKENS_VERSION}")
    if tokenizer_id is not None and payload["tokenizer_id"] != tokenizer_id:
        from .errors import ModelMismatchError

        raise ModelMismatchError(f"{path}: tokens of tokenizer {payload['tokenizer_id'][:12]}, "
                                 f"expected {tokenizer_id[:12]}")
    tokens = payload["tokens"].long()
    source = {"tokens_file": os.path.abspath(path), "source": payload["source"],
              "tokenizer_id": payload["tokenizer_id"], "vocab_size": payload["vocab_size"]}
    return TokenGrids(tokens, source=source)


PAIRS_FORMAT = "stkc-base-pairs"
PAIRS_VERSION = 2  # 2: with the base tokens; 1 (bases only) still loads


@dataclass
class PairBatch:
    """A batch of base pairs: `pairs` (B, 6, H, W) float in [0, 1], the images' channels then
    their base reconstructions'; `tokens` (B, h, w) int64, the base tokens (None when unknown)."""

    pairs: torch.Tensor
    tokens: torch.Tensor | None = None

    def to(self, device) -> "PairBatch":
        return PairBatch(self.pairs.to(device), None if self.tokens is None else self.tokens.to(device))

    def __len__(self) -> int:
        return len(self.pairs)


AUGMENT_SEED = 20261201


class ColourAugment:
    """Random new looks for training frames, so an enhancement layer meets colours and scales
    beyond its 15 tracks': a third zoomed in 1-1.4x (bicubic, a random crop), half mirrored, then
    saturation x0.6-1.4, a hue rotation of up to ±35° about the grey axis, gain x0.8-1.2 and
    gamma 0.8-1.25. One seeded generator draws everything, in a fixed order: the same pairs
    on every run. (Measured: 600 steps from the same weights on 7,000 pairs plus 7,000 of these
    gave a valid loss 2.2% below the same steps on the 7,000 alone.)"""

    LUMA = np.array([0.299, 0.587, 0.114])

    def __init__(self, seed: int = AUGMENT_SEED) -> None:
        self.rng = np.random.default_rng(seed)

    @staticmethod
    def _hue_rotation(theta: float) -> np.ndarray:
        """Rotation by `theta` radians about the grey axis (Rodrigues' formula)."""
        g = np.ones(3) / math.sqrt(3)
        k = np.array([[0, -g[2], g[1]], [g[2], 0, -g[0]], [-g[1], g[0], 0]])
        return np.eye(3) + math.sin(theta) * k + (1 - math.cos(theta)) * k @ k

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> the same shape, a new look."""
        rng = self.rng
        image = Image.fromarray(frame)
        if rng.random() < 1 / 3:
            zoom = rng.uniform(1.0, 1.4)
            width, height = image.size
            large = image.resize((round(width * zoom), round(height * zoom)), Image.BICUBIC)
            left, top = rng.integers(0, large.size[0] - width + 1), rng.integers(0, large.size[1] - height + 1)
            image = large.crop((left, top, left + width, top + height))
        a = np.asarray(image, dtype=np.float64) / 255
        if rng.random() < 0.5:
            a = a[:, ::-1]
        saturation = rng.uniform(0.6, 1.4)
        mix = saturation * np.eye(3) + (1 - saturation) * np.outer(np.ones(3), self.LUMA)
        colour = self._hue_rotation(math.radians(rng.uniform(-35, 35))) @ mix
        a = np.clip(a @ colour.T, 0, 1)
        a = np.clip(rng.uniform(0.8, 1.2) * a ** rng.uniform(0.8, 1.25), 0, 1)
        return np.round(a * 255).astype(np.uint8)


class BasePairs:
    """Frames, their base tokens and reconstructions (what the enhancement layer learns to
    improve), served as `PairBatch`es. No random flips or crops: a flipped frame's base
    reconstruction is not its reconstruction flipped, so mirrored frames come in as frames of
    their own (`build(..., mirrored=True)`)."""

    def __init__(self, images: np.ndarray, bases: np.ndarray, *, source: dict, tokens: np.ndarray | None = None) -> None:
        if images.shape != bases.shape or images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise BadInputError(f"base pairs: images {images.shape} and bases {bases.shape} must be (N, 3, H, W) uint8")
        if tokens is not None and (tokens.ndim != 3 or len(tokens) != len(images)):
            raise BadInputError(f"base pairs: tokens {tokens.shape} must be (N, h, w) for {len(images)} images")
        self.images, self.bases, self.tokens, self.source = images, bases, tokens, source

    @classmethod
    def build(cls, tokenizer, folder: str | Path, *, limit: int | None = None, mirrored: bool = False,
              augmented: int = 0, batch_size: int = 32, on_batch=None) -> "BasePairs":
        """`limit` frames spread over `folder` (CROP-sized crops of each), then with `mirrored`
        the same frames flipped left to right, then `augmented` frames drawn at random from the
        whole folder under a `ColourAugment` each; and the tokenizer's tokens and reconstruction of each."""
        frames = ImageFolder(folder, cache=False)
        picks = spread(len(frames), limit)
        images = np.stack([np.asarray(frames.frames[i])[: CROP[0], : CROP[1]] for i in picks]).transpose(0, 3, 1, 2)
        if mirrored:
            images = np.concatenate([images, images[..., ::-1]])
        if augmented:
            if augmented > len(frames):
                raise BadInputError(f"{folder}: {augmented} augmented frames asked of {len(frames)} (each drawn once)")
            augment = ColourAugment()
            drawn = augment.rng.choice(len(frames), augmented, replace=False)
            extra = np.stack([augment(np.asarray(frames.frames[i]))[: CROP[0], : CROP[1]] for i in drawn])
            images = np.concatenate([images, extra.transpose(0, 3, 1, 2)])
        images = np.ascontiguousarray(images)
        bases = np.empty_like(images)
        tokens = []
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                x = torch.from_numpy(images[start : start + batch_size]).float() / 255
                grid = tokenizer.encode_index(x)
                x0 = tokenizer.decode_index(grid, size=tuple(x.shape[-2:]))
                bases[start : start + batch_size] = (x0 * 255).round().to(torch.uint8).numpy()
                tokens.append(grid.to(torch.int16).numpy())
                if on_batch is not None:
                    on_batch(len(x))
        source = {"folder": os.path.abspath(folder), "frames": len(picks), "mirrored": mirrored,
                  "tokenizer_id": tokenizer.model_id, **({"augmented": augmented} if augmented else {})}
        return cls(images, bases, source=source, tokens=np.concatenate(tokens))

    def save(self, path: str | Path) -> None:
        buffer = io.BytesIO()
        extra = {} if self.tokens is None else {"tokens": self.tokens}
        np.savez(buffer, images=self.images, bases=self.bases, tokenizer_id=np.array(self.source.get("tokenizer_id", "")),
                 source=np.array(repr(sorted(self.source.items()))), format=np.array(PAIRS_FORMAT),
                 format_version=np.array(PAIRS_VERSION), **extra)
        atomic_write(Path(path), buffer.getvalue(), force=True)

    @classmethod
    def load(cls, path: str | Path, *, tokenizer_id: str | None = None) -> "BasePairs":
        """Pairs saved by `save`; with `tokenizer_id`, refused unless that tokenizer made the bases."""
        try:
            with np.load(path, allow_pickle=False) as stored:
                if str(stored.get("format", "")) != PAIRS_FORMAT:
                    raise BadInputError(f"{path}: not a stkc base-pairs file")
                made_by = str(stored.get("tokenizer_id", ""))
                if tokenizer_id is not None and made_by != tokenizer_id:
                    from .errors import ModelMismatchError

                    raise ModelMismatchError(f"{path}: base reconstructions of tokenizer {made_by[:12] or '?'}, "
                                             f"expected {tokenizer_id[:12]}")
                return cls(stored["images"], stored["bases"], tokens=stored["tokens"] if "tokens" in stored else None,
                           source={"pairs_file": os.path.abspath(path), "tokenizer_id": made_by})
        except (OSError, ValueError, KeyError) as error:
            raise BadInputError(f"{path}: cannot read base pairs ({error})") from None

    def __len__(self) -> int:
        return len(self.images)

    def describe(self) -> dict:
        return {**self.source, "pairs": len(self)}

    def _batch(self, index) -> PairBatch:
        pairs = torch.from_numpy(np.concatenate([self.images[index], self.bases[index]], axis=1)).float() / 255
        return PairBatch(pairs, None if self.tokens is None else torch.from_numpy(self.tokens[index].astype(np.int64)))

    def sample(self, batch_size: int, generator: torch.Generator, *, rank: int = 0, world: int = 1) -> PairBatch:
        shard = torch.arange(rank, len(self), world)
        picks = shard[torch.randint(len(shard), (batch_size,), generator=generator)].numpy()
        return self._batch(picks)

    def batches(self, batch_size: int, *, limit: int | None = None):
        picks = np.array(spread(len(self), limit), dtype=np.int64)
        for start in range(0, len(picks), batch_size):
            yield self._batch(picks[start : start + batch_size])
