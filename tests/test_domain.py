"""Images WebP serves better are flagged (domain.py); one large image shows its progress in tiles."""

import io
import json
import math

import numpy as np
import pytest
from PIL import Image

from stkcodec import domain
from stkcodec.codec import Codec
from stkcodec.domain import Comparison, Limits, compare_with_webp
from stkcodec.metrics import psnr_rgb

from .conftest import make_image
from .test_cli import invoke, runner, workdir  # noqa: F401 (fixtures)


def webp(pixels: np.ndarray, quality: int) -> tuple[int, float]:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "WEBP", quality=quality, method=domain.WEBP_METHOD)
    return buffer.tell(), psnr_rgb(pixels, np.asarray(Image.open(buffer).convert("RGB")))


@pytest.fixture(scope="module")
def pixels():
    return np.asarray(make_image(150, 100, seed=3))


def test_webp_own_file_compares_as_equal(pixels):
    for quality in (30, 60):  # a PSNR on the sweep's grid: interpolation lands on that very file
        size, psnr = webp(pixels, quality)
        comparison = compare_with_webp(pixels, size, psnr)
        assert comparison.ratio == pytest.approx(1.0, rel=1e-9) and comparison.nearest == (quality, size, psnr)
        assert Limits().reasons(1, comparison) == []


def test_bytes_at_psnr_between_settings_and_the_flag(pixels):
    (low_bytes, low_psnr), (high_bytes, high_psnr) = webp(pixels, 30), webp(pixels, 45)
    middle = (low_psnr + high_psnr) / 2
    comparison = compare_with_webp(pixels, 1000, middle)
    assert low_bytes < comparison.webp_bytes < high_bytes
    assert comparison.webp_bytes == pytest.approx(math.sqrt(low_bytes * high_bytes), rel=1e-9)  # linear in log-bytes
    twice = compare_with_webp(pixels, round(2 * comparison.webp_bytes), middle)
    assert twice.ratio == pytest.approx(2.0, rel=1e-3) and Limits().reasons(1, twice) == ["ratio"]
    assert Limits().reasons(1, compare_with_webp(pixels, round(0.9 * comparison.webp_bytes), middle)) == []


def test_below_webps_lowest_setting_its_curve_is_extended(pixels):
    (b0, p0), (b1, p1) = webp(pixels, 0), webp(pixels, 5)
    comparison = compare_with_webp(pixels, 100, p0 - 1.0)
    slope = math.log(b1 / b0) / (p1 - p0)
    expected = max(b0 * math.exp(-slope), b0 * domain.EXTEND_FLOOR)
    assert comparison.webp_bytes == pytest.approx(expected, rel=1e-9) and comparison.webp_bytes < b0
    far = compare_with_webp(pixels, 100, p0 - 50.0)  # extended EXTEND_DB at most, to half the file at most
    expected = max(b0 * math.exp(-slope * domain.EXTEND_DB), b0 * domain.EXTEND_FLOOR)
    assert far.webp_bytes == pytest.approx(expected, rel=1e-9) and far.webp_bytes >= b0 / 2


def test_a_psnr_webp_cannot_reach_is_never_flagged(pixels):
    comparison = compare_with_webp(pixels, 10**6, 99.0)
    assert comparison.ratio == 0.0 and comparison.record()["webp_bytes_at_psnr"] is None
    assert Limits().reasons(1, comparison) == []


def test_limits_per_level_and_their_messages():
    limits = Limits(psnr=(20.0, 25.0), ratio=1.3)
    worse = Comparison(2000, 27.0, 1500.0, (10, 1600, 27.4))  # 1.33x WebP
    assert limits.reasons(1, worse) == ["ratio"] and limits.reasons(2, worse) == ["ratio"]
    assert "1.33x what WebP needs" in limits.message("a.png", 1, worse) and "WebP serves" in limits.message("a.png", 1, worse)
    fine = Comparison(1800, 27.0, 1500.0, (10, 1600, 27.4))  # 1.2x
    assert limits.reasons(2, fine) == [] and limits.message("a.png", 2, fine) is None
    assert Limits().reasons(2, worse) == []  # under domain.RATIO_LIMIT
    blurred = Comparison(300, 16.0, 900.0, (0, 1500, 22.0))  # a third of WebP's smallest, 6 dB worse
    assert limits.reasons(1, blurred) == ["psnr"] and "at least 20.0 dB" in limits.message("t.png", 1, blurred)
    assert limits.reasons(2, Comparison(300, 24.0, 900.0, (0, 1500, 26.0))) == ["psnr"]  # level 2's floor: 25 dB
    assert limits.reasons(1, Comparison(300, 16.0, 900.0, (0, 1500, 15.0))) == []  # WebP no sharper: not its case
    assert Limits().psnr is None and Limits().reasons(1, blurred) == []


@pytest.mark.parametrize("quality", [1, 3])
def test_the_encoders_pixels_are_what_a_decoder_shows(tiny_layered_model, quality):
    codec = Codec(tiny_layered_model)
    images = [make_image(150, 100, seed=s) for s in range(2)]
    encoded = codec.encode_many(images, quality=quality)
    assert [e.data for e in encoded] == codec.compress_many(images, quality=quality)
    for result in encoded:
        shown = np.asarray(codec.decompress(result.data).convert("RGB")).astype(int)
        assert result.pixels.shape == shown.shape and np.abs(result.pixels.astype(int) - shown).max() <= 1
    assert all(e.pixels is None for e in codec.encode_many(images, quality=quality, reconstruct=False))


def test_compress_compares_with_webp_and_warns(runner, workdir, tiny_model_dir, monkeypatch):
    result = invoke(runner, ["compress", "kart.png", "-o", "k.stkc", "--json", "--model", tiny_model_dir])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)[0]
    assert record["unusual"] is (record["ratio_to_webp"] > domain.RATIO_LIMIT)  # a model of its own: no floors
    assert record["unusual_reasons"] == (["ratio"] if record["unusual"] else [])
    assert record["psnr"] > 0 and record["webp_nearest"]["bytes"] > 0
    monkeypatch.setattr(domain, "RATIO_LIMIT", 0.0)  # every image is one WebP serves better
    result = invoke(runner, ["compress", "kart.png", "-o", "k2.stkc", "--json", "--model", tiny_model_dir])
    assert json.loads(result.stdout)[0]["unusual"] is True
    assert "Warning: kart.png: " in result.stderr and "WebP serves this image better" in result.stderr
    result = invoke(runner, ["compress", "kart.png", "-o", "k3.stkc", "--json", "--no-check", "--model", tiny_model_dir])
    record = json.loads(result.stdout)[0]
    assert "unusual" not in record and "psnr" not in record and "Warning" not in result.stderr


def test_one_large_image_shows_its_steps(runner, workdir, tiny_model_dir, monkeypatch):
    from stkcodec import cli_codec

    seen = []
    monkeypatch.setattr(cli_codec.TileBar, "__call__", lambda self, tiles: seen.append(tiles))
    make_image(480, 300).save("big.png")  # a grid of 60 x 96 tokens: 3 x 4 tiles of 20 x 30
    assert invoke(runner, ["compress", "big.png", "--no-check", "--model", tiny_model_dir]).exit_code == 0
    assert invoke(runner, ["decompress", "big.stkc", "-o", "big2.png", "--model", tiny_model_dir]).exit_code == 0
    # each way: 12 tiles of the prior, 6 windows of 32 x 32 tokens, and the last step (PNG writing)
    assert sum(seen) == 2 * (12 + 6 + 1)
    seen.clear()  # the comparison with WebP decodes the tokens once more, and is the last step
    assert invoke(runner, ["compress", "big.png", "--force", "--model", tiny_model_dir]).exit_code == 0
    assert sum(seen) == 12 + 2 * 6 + 1


def test_the_default_model_has_limits_for_every_level():
    from stkcodec import zoo

    floors = zoo.shipped()["psnr_floor"][zoo.shipped()["default"]]
    model = zoo.CodecModel.load("default")
    assert len(floors) == model.levels and floors == sorted(floors) and 15 < floors[0] < floors[-1] < 35
    assert model.domain_limits.psnr == tuple(floors)


def test_images_webp_cannot_code_or_too_large_are_not_compared(runner, workdir, tiny_model_dir, monkeypatch):
    assert domain.comparable(16383, 100) and not domain.comparable(16384, 100)
    assert not domain.comparable(5000, 4000)  # 20 Mpx: WebP's copies would outgrow the codec's memory
    monkeypatch.setattr(domain, "MAX_PIXELS", 100)
    result = invoke(runner, ["compress", "kart.png", "-o", "k.stkc", "--json", "--model", tiny_model_dir])
    assert result.exit_code == 0, result.output
    assert "unusual" not in json.loads(result.stdout)[0] and "not compared with WebP" in result.stderr
