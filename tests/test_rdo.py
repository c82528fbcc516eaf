"""The encoder's choice of base tokens (rdo.py, `Codec(effort=...)`): what it weighs, that the
decoder gets exactly the tokens chosen, and that effort 0 codes the tokenizer's own tokens."""

import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from stkcodec import bitstream, rdo
from stkcodec.cli import main
from stkcodec.codec import Codec
from stkcodec.errors import BadInputError
from stkcodec.windows import image_tokens, image_tokens_and_margins
from stkcodec.zoo import CodecModel

from .conftest import make_image, tiny_models
from .test_group_prior import tiny_group_prior


@pytest.fixture(scope="module")
def group_model() -> CodecModel:
    tokenizer, _ = tiny_models()
    return CodecModel(tokenizer, tiny_group_prior())


def test_distortion_is_the_squared_distance_a_token_adds():
    bits = 6
    rng = np.random.default_rng(0)
    unit = rng.normal(size=(5, bits))
    unit /= np.linalg.norm(unit, axis=-1, keepdims=True)
    own = ((unit > 0) * 2 ** np.arange(bits)).sum(-1)
    signs = rdo.token_signs(bits)
    assert np.array_equal(signs[own], np.sign(unit))
    # a flat prior: the choice is by distortion alone, so every cell keeps its own token
    flat = np.ones((1, 5, 2**bits))
    assert np.array_equal(rdo.chooser(1.0)(flat, own[None], np.abs(unit)[None])[0], own)
    # the distortion it weighs: sqrt(bits)/2 times what each token adds to the squared distance from the latent
    distance = ((unit[:, None] - signs[None] / math.sqrt(bits)) ** 2).sum(-1)  # (5, V)
    added = (distance - distance[np.arange(5), own][:, None]) * math.sqrt(bits) / 2
    margins = np.abs(unit)
    computed = margins.sum(-1, keepdims=True) - (margins * signs[own]) @ signs.T
    assert np.allclose(computed, added)


def test_lambda_trades_rate_for_distortion():
    bits, cells = 4, 3
    margins = np.full((1, cells, bits), 0.5)
    own = np.zeros((1, cells), dtype=np.int64)
    weights = np.ones((1, cells, 2**bits))
    weights[..., 15] = 2.0**20  # token 15 (every bit flipped: distortion 2) is 20 bits cheaper
    assert np.array_equal(rdo.chooser(100.0)(weights, own, margins), own)
    assert np.array_equal(rdo.chooser(1.0)(weights, own, margins), np.full((1, cells), 15))


def test_effort_1_codes_the_tokens_it_chose_and_the_decoder_gets_them(group_model):
    images = [make_image(31, 17, seed=s) for s in range(3)] + [make_image(12, 40)]
    plain, chosen = Codec(group_model, effort=0), Codec(group_model, effort=1)
    plain_files, files = plain.compress_many(images), chosen.compress_many(images)
    for image, plain_file, data in zip(images, plain_files, files):
        (header, tokens), = chosen.tokens_many([data])  # the token checksum holds for what was chosen
        assert torch.equal(plain.tokens_many([plain_file])[0][1], image_tokens(group_model.tokenizer, [image])[0])
        assert header.model_id == group_model.model_id
    changed = sum(not torch.equal(chosen.tokens_many([d])[0][1], plain.tokens_many([p])[0][1])
                  for d, p in zip(files, plain_files))
    assert changed > 0  # the tiny prior is far from flat: some token moves
    assert sum(map(len, files)) <= sum(map(len, plain_files))
    alone = [chosen.compress(image) for image in images]
    assert alone == files  # batching never changes the choice
    encoded = chosen.encode_many(images)  # the encoder's own picture is the decoder's
    for result, data in zip(encoded, files):
        assert np.array_equal(result.pixels, np.asarray(chosen.decompress(data)))


def test_margins_come_with_the_same_tokens(group_model):
    images = [make_image(40, 23, seed=s) for s in range(2)]
    grids, margins = image_tokens_and_margins(group_model.tokenizer, images)
    assert all(torch.equal(a, b) for a, b in zip(grids, image_tokens(group_model.tokenizer, images)))
    bits = group_model.tokenizer.config.bits
    assert margins[0].shape == (*grids[0].shape, bits) and margins[0].dtype == torch.float16
    assert float(margins[0].min()) >= 0 and float(margins[0].max()) <= 1


def test_a_raster_prior_codes_its_tokens_at_any_effort(tiny_codec_model):
    image = make_image(31, 17)
    assert Codec(tiny_codec_model, effort=1).compress(image) == Codec(tiny_codec_model, effort=0).compress(image)


def test_an_unknown_effort_is_refused(group_model, tmp_path):
    with pytest.raises(BadInputError, match="valid: 0, 1"):
        Codec(group_model, effort=2)
    make_image(20, 10).save(tmp_path / "a.png")
    result = CliRunner().invoke(main, ["compress", str(tmp_path / "a.png"), "--effort", "2"])
    assert result.exit_code == 2 and "--effort" in result.output and not (tmp_path / "a.stkc").exists()


def test_the_cli_offers_every_effort_and_defaults_to_rdo_default():
    option = next(p for p in main.commands["compress"].params if p.name == "effort")
    assert (option.type.min, option.type.max) == (min(rdo.EFFORT_LAMBDA), max(rdo.EFFORT_LAMBDA))
    assert option.default == rdo.DEFAULT_EFFORT


def test_effort_does_not_enter_the_file_format(group_model):
    data = Codec(group_model, effort=1).compress(make_image(31, 17))
    header, _ = bitstream.parse(data)
    assert header.model_id == group_model.model_id  # a decoder of either effort's files is the same
