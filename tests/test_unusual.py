"""Images unlike game frames are flagged; one large image shows its progress in tiles."""

import json

from stkcodec import zoo
from stkcodec.codec import Codec
from stkcodec.zoo import CodecModel

from .conftest import make_image, tiny_models
from .test_cli import invoke, runner, workdir  # noqa: F401 (fixtures)


def test_unusual_is_the_bits_per_token_above_the_models_figure():
    codec = Codec(CodecModel(*tiny_models()))
    data = codec.compress(make_image(40, 30))
    assert codec.unusual(data) is None  # no range: never flagged
    codec.model.usual_bits_per_token = (0.0, 0.01)
    bits = codec.unusual(data)
    assert bits is not None and abs(bits - 8 * (len(data) - 25) / (6 * 8)) < 1e-9
    codec.model.usual_bits_per_token = (bits - 0.1, bits + 0.1)
    assert codec.unusual(data) is None
    codec.model.usual_bits_per_token = (bits + 0.1, bits + 5)  # too cheap is unusual too (a flat drawing)
    assert codec.unusual(data) == bits


def test_compress_warns_on_stderr_and_in_json(runner, workdir, tiny_model_dir, monkeypatch):
    load = CodecModel.load

    def strict(model=None):
        loaded = load(model)
        loaded.usual_bits_per_token = (0.0, 0.01)  # every image is unusual for this model
        return loaded

    monkeypatch.setattr(CodecModel, "load", staticmethod(strict))
    result = invoke(runner, ["compress", "kart.png", "-o", "k.stkc", "--json", "--model", tiny_model_dir])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["unusual"] is True
    assert "Warning: kart.png:" in result.stderr and "unlike what the model was trained on" in result.stderr
    monkeypatch.setattr(CodecModel, "load", staticmethod(load))
    result = invoke(runner, ["compress", "kart.png", "-o", "k2.stkc", "--json", "--model", tiny_model_dir])
    assert json.loads(result.stdout)[0]["unusual"] is False and "Warning" not in result.stderr


def test_shipped_models_carry_their_figure():
    figures = zoo.shipped().get("usual_bits_per_token", {})
    assert set(figures) <= set(zoo.shipped()["models"]) and zoo.shipped()["default"] in figures
    assert all(0.0 < low < 3.0 < 5.0 < high < 12.0 for low, high in figures.values())


def test_one_large_image_shows_its_steps(runner, workdir, tiny_model_dir, monkeypatch):
    from stkcodec import cli_codec

    seen = []
    monkeypatch.setattr(cli_codec.TileBar, "__call__", lambda self, tiles: seen.append(tiles))
    make_image(480, 300).save("big.png")  # a grid of 60 x 96 tokens: 3 x 4 tiles of 20 x 30
    assert invoke(runner, ["compress", "big.png", "--model", tiny_model_dir]).exit_code == 0
    assert invoke(runner, ["decompress", "big.stkc", "-o", "big2.png", "--model", tiny_model_dir]).exit_code == 0
    assert sum(seen) == 2 * (12 + 6)  # each way: 12 tiles of the prior, 6 windows of 32 x 32 tokens
