"""Conformance vectors: files written by the shipped default model must decode to the same
tokens forever (and to the same pixels, within one level where float rounding breaks a tie).

STKC_GENERATE_VECTORS=1 rewrites them, on purpose only: when the format or the default model changes.
"""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stkcodec.codec import Codec, token_images

from .conftest import make_image

VECTORS = Path(__file__).resolve().parent.parent / "formats" / "vectors"
SAMPLE = Path(__file__).resolve().parent.parent / "stkcodec" / "samples" / "frame0.png"


def sources() -> dict[str, Image.Image]:
    with Image.open(SAMPLE) as frame:
        frame = frame.convert("RGB")
    return {
        "frame-150x100": frame,
        "odd-13x7": make_image(13, 7, seed=7),
        "pixel-1x1": make_image(1, 1, seed=1),
        "tiled-333x250": make_image(333, 250, seed=3),
    }


def digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def codec():
    return Codec("default")


@pytest.mark.skipif(not os.environ.get("STKC_GENERATE_VECTORS"), reason="regenerates golden files on request only")
def test_generate_vectors(codec):
    VECTORS.mkdir(parents=True, exist_ok=True)
    manifest = {}
    for name, image in sources().items():
        data = codec.compress(image)
        (VECTORS / f"{name}.stkc").write_bytes(data)
        (_, tokens), = codec.tokens_many([data])
        decoded = codec.decompress(data)
        decoded.save(VECTORS / f"{name}.png")
        manifest[name] = {"width": image.width, "height": image.height, "bytes": len(data),
                          "tokens_sha256": digest(tokens.numpy().astype("<u2")),
                          "pixels_sha256": digest(np.asarray(decoded))}
    (VECTORS / "vectors.json").write_text(json.dumps(manifest, indent=2) + "\n")


def manifest() -> dict:
    path = VECTORS / "vectors.json"
    return json.loads(path.read_text()) if path.exists() else {}


def test_vectors_exist():
    assert len(manifest()) == len(sources()), "formats/vectors/vectors.json is missing or incomplete"


@pytest.mark.parametrize("name", sorted(manifest()))
def test_vector_decodes_to_its_tokens_and_pixels(codec, name):
    expected = manifest()[name]
    data = (VECTORS / f"{name}.stkc").read_bytes()
    (header, tokens), = codec.tokens_many([data], [name])
    assert (header.width, header.height) == (expected["width"], expected["height"])
    assert digest(tokens.numpy().astype("<u2")) == expected["tokens_sha256"]
    decoded, = token_images(codec.model.tokenizer, [tokens], (header.width, header.height))
    decoded = np.asarray(decoded).astype(int)
    with Image.open(VECTORS / f"{name}.png") as reference:
        reference_pixels = np.asarray(reference.convert("RGB")).astype(int)
    assert decoded.shape == reference_pixels.shape
    assert np.abs(decoded - reference_pixels).max() <= 1  # the decoder's float math may break a tie differently
    if digest(decoded.astype(np.uint8)) != expected["pixels_sha256"]:
        pytest.xfail("pixels differ by one level somewhere on this machine (allowed)")
