"""Conformance vectors: files written by every shipped model, today's default and earlier ones,
must decode with the default codec to the same tokens forever, and to the same pixels within a
documented tolerance: the tokenizer's decoder is float math, and other CPU kernels may round a
pixel that sits on a tie to the next 8-bit level (docs/portability-valid-500.json: never more
than one level). So a decoded vector may differ from its reference PNG by at most one level, in
at most PIXEL_TOLERANCE of its values; anything more fails.

formats/vectors/<model name>/ holds each model's files, their manifest (vectors.json) and their
decoded pixels (pixels.npz: one uint8 array per vector, named as it is, NumPy's zip of .npy
files). STKC_GENERATE_VECTORS=1 writes the
default model's, on purpose only: when a new default model ships or the format changes.
"""

import functools
import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stkcodec import bitstream, rdo, zoo
from stkcodec.codec import Codec
from stkcodec.errors import BadInputError
from stkcodec.windows import token_images

from .conftest import make_image

VECTORS = Path(__file__).resolve().parent.parent / "formats" / "vectors"
PIXEL_TOLERANCE = 0.01  # the fraction of a vector's 8-bit values that may be one level off
SAMPLE = Path(__file__).resolve().parent.parent / "stkcodec" / "samples" / "frame0.png"


@functools.cache
def sources() -> dict[str, tuple[Image.Image, int | None]]:
    """Each vector's image and quality level (None: the model's default level), at effort 0 (the
    tokenizer's own tokens; see `efforts` for the others)."""
    with Image.open(SAMPLE) as frame:
        frame = frame.convert("RGB")
    named = {
        "frame-150x100": (frame, None),
        "odd-13x7": (make_image(13, 7, seed=7), None),
        "pixel-1x1": (make_image(1, 1, seed=1), None),
        "tiled-333x250": (make_image(333, 250, seed=3), None),
        "gray-150x100": (frame.convert("L"), None),  # format version 2: decodes gray
    }
    levels = Codec("default").levels
    if levels > 1:  # format version 3: every level of a frame, and the odd shapes enhanced
        named.update({f"frame-150x100-q{q}": (frame, q) for q in range(1, levels + 1)})
        named.update({"odd-13x7-top": (make_image(13, 7, seed=7), levels),
                      "pixel-1x1-top": (make_image(1, 1, seed=1), levels),
                      "tiled-333x250-q3": (make_image(333, 250, seed=3), min(3, levels)),
                      "gray-150x100-q3": (frame.convert("L"), min(3, levels))})
    return named


VERSION_1_SOURCES = {"frame-150x100", "odd-13x7", "pixel-1x1", "tiled-333x250"}  # what older models' vectors hold
EFFORT_SOURCES = ("frame-150x100", "tiled-333x250-q3", "gray-150x100")  # and every level of the frame


def efforts() -> dict[str, tuple[Image.Image, int | None, int]]:
    """Every vector the default model writes: `sources()` at effort 0, and at every higher encoder
    effort (rdo.py: the encoder chooses the tokens) the frame at every level, the tiled image
    and gray, named "<source>-e<effort>"."""
    named = {name: (image, quality, 0) for name, (image, quality) in sources().items()}
    levelled = [name for name in sources() if name.startswith("frame-150x100-q")]
    for effort in sorted(rdo.EFFORT_LAMBDA)[1:]:
        named.update({f"{name}-e{effort}": (*sources()[name], effort) for name in (*EFFORT_SOURCES, *levelled)
                      if name in sources()})
    return named


def source_image(name: str) -> Image.Image:
    """The image a vector of any model was made from, by its name ("frame-150x100-q3-e1" -> the frame)."""
    base = re.sub(r"(-(q\d+|top))?(-e\d+)?$", "", name)
    return sources()[base][0]


def effort_of(name: str) -> int:
    """The encoder effort a vector was written at: its name's "-e<effort>", else 0."""
    found = re.search(r"-e(\d+)$", name)
    return int(found.group(1)) if found else 0


def digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def codec():
    return Codec("default")


@pytest.mark.skipif(not os.environ.get("STKC_GENERATE_VECTORS"), reason="regenerates golden files on request only")
def test_generate_vectors(codec):
    folder = VECTORS / zoo.shipped()["default"]
    folder.mkdir(parents=True, exist_ok=True)
    manifest, pixels = {}, {}
    for name, (image, quality, effort) in efforts().items():
        data = Codec("default", effort=effort).compress(image, quality=quality)
        (folder / f"{name}.stkc").write_bytes(data)
        (header, tokens), = codec.tokens_many([data])
        pixels[name] = np.asarray(codec.decompress(data))
        manifest[name] = {"width": image.width, "height": image.height, "level": header.quality, "effort": effort,
                          "bytes": len(data),
                          "tokens_sha256": digest(tokens.numpy().astype("<u2")),
                          "pixels_sha256": digest(pixels[name])}
    np.savez_compressed(folder / "pixels.npz", **pixels)
    (folder / "vectors.json").write_text(json.dumps(manifest, indent=2) + "\n")


@functools.cache
def reference_pixels(model: str) -> dict[str, np.ndarray]:
    """A model's vectors' decoded pixels, by name (H x W x 3 for RGB, H x W for gray)."""
    with np.load(VECTORS / model / "pixels.npz", allow_pickle=False) as stored:
        return {name: stored[name] for name in stored.files}


def manifest(model: str) -> dict:
    path = VECTORS / model / "vectors.json"
    return json.loads(path.read_text()) if path.exists() else {}


def all_vectors() -> list[tuple[str, str]]:
    return [(model, name) for model in sorted(zoo.shipped()["models"]) for name in sorted(manifest(model))]


@pytest.mark.parametrize("model", sorted(zoo.shipped()["models"]))
def test_every_shipped_model_has_vectors(model):
    expected = set(efforts()) if model == zoo.shipped()["default"] else VERSION_1_SOURCES
    assert set(manifest(model)) >= expected, f"formats/vectors/{model}/vectors.json is missing or incomplete"


@pytest.mark.parametrize(("model", "name"), all_vectors())
def test_vector_decodes_to_its_tokens_and_pixels(codec, model, name):
    expected = manifest(model)[name]
    data = (VECTORS / model / f"{name}.stkc").read_bytes()
    (header, tokens), = codec.tokens_many([data], [name])
    assert (header.width, header.height) == (expected["width"], expected["height"])
    assert digest(tokens.numpy().astype("<u2")) == expected["tokens_sha256"]
    assert header.quality == expected.get("level", 1)
    maker = codec.for_model(header.model_id)
    assert maker.model.model_id.hex() == zoo.shipped()["models"][model]
    decoded = np.asarray(codec.decompress(data)).astype(int)  # an enhancement's symbols pass its checksum
    if header.quality == 1:  # the base layer alone: the tokenizer's pixels
        base, = token_images(maker.model.tokenizer, [tokens], (header.width, header.height))
        assert np.array_equal(np.asarray(base.convert(header.mode)).astype(int), decoded)
    reference = reference_pixels(model)[name]
    assert reference.dtype == np.uint8 and reference.ndim == (3 if header.mode == "RGB" else 2)
    assert digest(reference) == expected["pixels_sha256"]  # the reference is the golden one
    assert decoded.shape == reference.shape
    difference = np.abs(decoded - reference.astype(int))
    assert difference.max() <= 1 and (difference > 0).mean() <= PIXEL_TOLERANCE, (
        f"{model}/{name}: {int((difference > 0).sum())} values differ, by up to {difference.max()}")


@pytest.mark.parametrize("name", sorted(manifest(zoo.shipped()["default"])))
def test_default_vectors_re_encode_to_the_same_bytes(codec, name):
    """The default model's encoder, on this machine's kind, writes its vectors again byte for byte,
    each at the effort it was written at."""
    image, quality, effort = efforts()[name]
    assert manifest(zoo.shipped()["default"])[name].get("effort", 0) == effort == effort_of(name)
    data = (VECTORS / zoo.shipped()["default"] / f"{name}.stkc").read_bytes()
    assert Codec("default", effort=effort).compress(image, quality=quality) == data


@pytest.mark.parametrize(("model", "name"), [v for v in all_vectors() if v[0] != zoo.shipped()["default"]])
def test_older_models_vectors_re_encode_to_the_same_payloads(model, name):
    """Encoder conformance of every shipped model: today's encoder writes each vector's base (and
    enhancement) payload again byte for byte; only the header differs, in the format version
    an encoder writes today."""
    data = (VECTORS / model / f"{name}.stkc").read_bytes()
    header, payload = bitstream.parse(data)
    older = Codec(model, effort=effort_of(name))
    if older.model.tokenizer.retired:  # a decode-only tokenizer (its encoder left out)
        with pytest.raises(BadInputError, match=f"{model} decodes only"):
            older.compress(source_image(name), quality=header.quality)
        return
    if header.quality > 1 and older.model.enhancer.retired:  # a decode-only enhancement layer (its E left out)
        with pytest.raises(BadInputError, match=f"{model} decodes every level but encodes level 1 only"):
            older.compress(source_image(name), quality=header.quality)
        return
    again, again_payload = bitstream.parse(older.compress(source_image(name), quality=header.quality))
    assert again_payload == payload
    assert (again.enhancement and again.enhancement.payload) == (header.enhancement and header.enhancement.payload)
    assert (again.width, again.height, again.mode, again.quality) == (header.width, header.height, header.mode,
                                                                       header.quality)


def test_a_vector_cut_after_its_base_is_its_level_1_vector(codec):
    from stkcodec import bitstream

    folder = VECTORS / zoo.shipped()["default"]
    if codec.levels == 1:
        pytest.skip("the default model has one level")
    top = (folder / f"frame-150x100-q{codec.levels}.stkc").read_bytes()
    assert top[: bitstream.parse(top)[0].base_bytes] == (folder / "frame-150x100-q1.stkc").read_bytes()


def test_shipped_models_load_by_name_and_an_explicit_model_refuses_other_files(tiny_codec_model):
    from stkcodec.errors import ModelMismatchError

    for model in zoo.shipped()["models"]:
        named = Codec(model)
        assert named.model.model_id.hex() == zoo.shipped()["models"][model]
        data = (VECTORS / model / "odd-13x7.stkc").read_bytes()
        assert named.decompress(data).size == (13, 7)
        with pytest.raises(ModelMismatchError, match=f"made by shipped model {model} "):
            Codec(tiny_codec_model).decompress(data)
