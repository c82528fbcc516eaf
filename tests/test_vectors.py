"""Conformance vectors: files written by every shipped model, today's default and earlier ones,
must decode with the default codec to the same tokens forever, and to the same pixels within a
documented tolerance: the tokenizer's decoder is float math, and other CPU kernels may round a
pixel that sits on a tie to the next 8-bit level (docs/portability-valid-500.json: never more
than one level). So a decoded vector may differ from its reference PNG by at most one level, in
at most PIXEL_TOLERANCE of its values; anything more fails.

formats/vectors/<model name>/ holds each model's files. STKC_GENERATE_VECTORS=1 writes the
default model's, on purpose only: when a new default model ships or the format changes.
"""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stkcodec import zoo
from stkcodec.codec import Codec, token_images

from .conftest import make_image

VECTORS = Path(__file__).resolve().parent.parent / "formats" / "vectors"
PIXEL_TOLERANCE = 0.01  # the fraction of a vector's 8-bit values that may be one level off
SAMPLE = Path(__file__).resolve().parent.parent / "stkcodec" / "samples" / "frame0.png"


def sources() -> dict[str, Image.Image]:
    with Image.open(SAMPLE) as frame:
        frame = frame.convert("RGB")
    return {
        "frame-150x100": frame,
        "odd-13x7": make_image(13, 7, seed=7),
        "pixel-1x1": make_image(1, 1, seed=1),
        "tiled-333x250": make_image(333, 250, seed=3),
        "gray-150x100": frame.convert("L"),  # format version 2: decodes gray
    }


VERSION_1_SOURCES = {"frame-150x100", "odd-13x7", "pixel-1x1", "tiled-333x250"}  # what older models' vectors hold


def digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def codec():
    return Codec("default")


@pytest.mark.skipif(not os.environ.get("STKC_GENERATE_VECTORS"), reason="regenerates golden files on request only")
def test_generate_vectors(codec):
    folder = VECTORS / zoo.shipped()["default"]
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {}
    for name, image in sources().items():
        data = codec.compress(image)
        (folder / f"{name}.stkc").write_bytes(data)
        (_, tokens), = codec.tokens_many([data])
        decoded = codec.decompress(data)
        decoded.save(folder / f"{name}.png")
        manifest[name] = {"width": image.width, "height": image.height, "bytes": len(data),
                          "tokens_sha256": digest(tokens.numpy().astype("<u2")),
                          "pixels_sha256": digest(np.asarray(decoded))}
    (folder / "vectors.json").write_text(json.dumps(manifest, indent=2) + "\n")


def manifest(model: str) -> dict:
    path = VECTORS / model / "vectors.json"
    return json.loads(path.read_text()) if path.exists() else {}


def all_vectors() -> list[tuple[str, str]]:
    return [(model, name) for model in sorted(zoo.shipped()["models"]) for name in sorted(manifest(model))]


@pytest.mark.parametrize("model", sorted(zoo.shipped()["models"]))
def test_every_shipped_model_has_vectors(model):
    expected = set(sources()) if model == zoo.shipped()["default"] else VERSION_1_SOURCES
    assert set(manifest(model)) >= expected, f"formats/vectors/{model}/vectors.json is missing or incomplete"


@pytest.mark.parametrize(("model", "name"), all_vectors())
def test_vector_decodes_to_its_tokens_and_pixels(codec, model, name):
    expected = manifest(model)[name]
    data = (VECTORS / model / f"{name}.stkc").read_bytes()
    (header, tokens), = codec.tokens_many([data], [name])
    assert (header.width, header.height) == (expected["width"], expected["height"])
    assert digest(tokens.numpy().astype("<u2")) == expected["tokens_sha256"]
    maker = codec.for_model(header.model_id)
    assert maker.model.model_id.hex() == zoo.shipped()["models"][model]
    decoded, = token_images(maker.model.tokenizer, [tokens], (header.width, header.height))
    decoded = np.asarray(decoded.convert(header.mode)).astype(int)
    assert np.array_equal(decoded, np.asarray(codec.decompress(data)).astype(int))
    with Image.open(VECTORS / model / f"{name}.png") as reference:
        assert reference.mode == header.mode
        reference_pixels = np.asarray(reference).astype(int)
    assert digest(reference_pixels.astype(np.uint8)) == expected["pixels_sha256"]  # the reference is the golden one
    assert decoded.shape == reference_pixels.shape
    difference = np.abs(decoded - reference_pixels)
    assert difference.max() <= 1 and (difference > 0).mean() <= PIXEL_TOLERANCE, (
        f"{model}/{name}: {int((difference > 0).sum())} values differ, by up to {difference.max()}")


def test_shipped_models_load_by_name_and_an_explicit_model_refuses_other_files(tiny_codec_model):
    from stkcodec.errors import ModelMismatchError

    for model in zoo.shipped()["models"]:
        named = Codec(model)
        assert named.model.model_id.hex() == zoo.shipped()["models"][model]
        data = (VECTORS / model / "odd-13x7.stkc").read_bytes()
        assert named.decompress(data).size == (13, 7)
        with pytest.raises(ModelMismatchError):
            Codec(tiny_codec_model).decompress(data)
