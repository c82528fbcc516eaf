"""Images unlike game frames are flagged (domain.py), with WebP's figures; one large image shows its progress in tiles."""

import io
import json
import math

import numpy as np
import pytest
from PIL import Image

from stkcodec import domain
from stkcodec.codec import Codec
from stkcodec.domain import Band, Comparison, Limits, Signals, compare_with_webp, flat_share
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


def test_bytes_at_psnr_between_settings(pixels):
    (low_bytes, low_psnr), (high_bytes, high_psnr) = webp(pixels, 30), webp(pixels, 45)
    middle = (low_psnr + high_psnr) / 2
    comparison = compare_with_webp(pixels, 1000, middle)
    assert low_bytes < comparison.webp_bytes < high_bytes
    assert comparison.webp_bytes == pytest.approx(math.sqrt(low_bytes * high_bytes), rel=1e-9)  # linear in log-bytes
    twice = compare_with_webp(pixels, round(2 * comparison.webp_bytes), middle)
    assert twice.ratio == pytest.approx(2.0, rel=1e-3)


def test_below_webps_lowest_setting_its_curve_is_extended(pixels):
    (b0, p0), (b1, p1) = webp(pixels, 0), webp(pixels, 5)
    comparison = compare_with_webp(pixels, 100, p0 - 1.0)
    slope = math.log(b1 / b0) / (p1 - p0)
    expected = max(b0 * math.exp(-slope), b0 * domain.EXTEND_FLOOR)
    assert comparison.webp_bytes == pytest.approx(expected, rel=1e-9) and comparison.webp_bytes < b0
    far = compare_with_webp(pixels, 100, p0 - 50.0)  # extended EXTEND_DB at most, to half the file at most
    expected = max(b0 * math.exp(-slope * domain.EXTEND_DB), b0 * domain.EXTEND_FLOOR)
    assert far.webp_bytes == pytest.approx(expected, rel=1e-9) and far.webp_bytes >= b0 / 2


def test_a_psnr_webp_cannot_reach(pixels):
    comparison = compare_with_webp(pixels, 10**6, 99.0)
    assert comparison.ratio == 0.0 and comparison.record()["webp_bytes_at_psnr"] is None


def flat_artwork(width: int = 200, height: int = 120) -> np.ndarray:
    """A logo-like picture: a white ground, a few boxes of flat colour, thin dark lines."""
    image = Image.new("RGB", (width, height), "white")
    from PIL import ImageDraw

    draw = ImageDraw.Draw(image)
    draw.rectangle((20, 20, 80, 70), fill=(200, 40, 40))
    draw.ellipse((100, 30, 170, 100), fill=(30, 90, 200))
    for k in range(5):
        draw.line((0, 10 + 20 * k, width, 15 + 20 * k), fill=(20, 20, 20), width=1)
    return np.asarray(image)


def test_flat_share_counts_one_colour_neighbourhoods():
    assert flat_share(np.full((50, 40, 3), 7, np.uint8)) == 1.0
    assert flat_share(np.asarray(make_image(150, 100))) < 0.01  # texture everywhere, as a rendered frame
    half = np.zeros((40, 40, 3), np.uint8)
    half[:, 20:] = np.random.default_rng(0).integers(0, 256, (40, 20, 3))
    assert flat_share(half) == pytest.approx(18 / 38)  # centres in columns 1..18 of 1..38: the flat half
    art = flat_artwork()
    assert flat_share(art) > domain.FLAT_LIMIT
    assert flat_share(art, rows_at_once=7) == flat_share(art)  # in bands of rows or at once, the same count
    assert flat_share(np.zeros((2, 50, 3), np.uint8)) == 0.0  # no pixel off the border


def test_the_band_and_the_reasons():
    band = Band((0.0, -2.0, 32.0), 2.0)  # PSNR 32 - 2 bits per token
    assert band.z(3.0, 26.0) == pytest.approx(0.0) and band.z(3.0, 19.0) == pytest.approx(-3.5)
    limits = Limits(band)
    assert limits.reasons(Signals(0.1, -1.0)) == []
    assert limits.reasons(Signals(0.9, -1.0)) == ["flat"]
    assert limits.reasons(Signals(0.1, -3.5)) == ["base"]
    assert limits.reasons(Signals(0.9, -5.0)) == ["flat", "base"]
    assert Limits().reasons(Signals(0.1, None)) == [] and Limits().reasons(Signals(0.9, None)) == ["flat"]
    worse = Comparison(2000, 27.0, 1000.0, (10, 1100, 27.4))  # 2x WebP
    message = limits.message("t.png", 4, worse, Signals(0.9, -5.0))
    assert message.startswith("t.png: unlike the SuperTuxKart frames") and "90% of it is flat colour" in message
    assert "10.0 dB poorer" in message and "level 4 gives 2,000 B at 27.0 dB" in message
    assert "WebP needs 2.00x fewer bytes" in message and "WebP -q 10: 1,100 B at 27.4 dB" in message
    cheaper = Comparison(500, 20.0, 1000.0, (0, 800, 24.0))  # stkc smaller but far blurrier
    assert "compare WebP -q 0: 800 B at 24.0 dB" in limits.message("t.png", 1, cheaper, Signals(0.1, -4.0))
    assert limits.message("t.png", 1, worse, Signals(0.1, 0.0)) is None


def test_signals_are_the_images_whatever_its_level(tiny_layered_model):
    from stkcodec import bitstream

    codec = Codec(tiny_layered_model)
    limits = Limits(Band((0.0, 0.0, 30.0), 1.0))
    image = Image.fromarray(flat_artwork(150, 100))
    seen = []
    for quality in (1, 3):
        [encoded] = codec.encode_many([image], quality=quality)
        header = bitstream.parse(encoded.data)[0]
        assert encoded.base is not None and (quality > 1 or encoded.base is encoded.pixels)
        seen.append(limits.signals(np.asarray(image), encoded.base, header.payload_bytes, math.prod(header.grid)))
    assert seen[0] == seen[1]


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


def test_compress_flags_images_unlike_frames_and_names_webp(runner, workdir, tiny_model_dir, monkeypatch):
    result = invoke(runner, ["compress", "kart.png", "-o", "k.stkc", "--json", "--model", tiny_model_dir])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)[0]
    assert record["unusual"] is False and record["unusual_reasons"] == [] and "Warning" not in result.stderr
    assert record["psnr"] > 0 and record["webp_nearest"]["bytes"] > 0 and record["flat_share"] < 0.01
    assert record["base_z"] is None  # a model of its own: no band, the flat share alone
    Image.fromarray(flat_artwork()).save("logo.png")
    result = invoke(runner, ["compress", "logo.png", "--json", "--model", tiny_model_dir])
    record = json.loads(result.stdout)[0]
    assert result.exit_code == 0 and record["unusual"] is True and record["unusual_reasons"] == ["flat"]
    assert "Warning: logo.png: unlike the SuperTuxKart frames" in result.stderr and "WebP" in result.stderr
    from stkcodec import zoo

    original = zoo.CodecModel.__init__

    def with_band(self, *args, **kwargs):  # a band no picture reaches: every base layer far poorer than it
        original(self, *args, **kwargs)
        self.domain_limits = Limits(Band((0.0, 0.0, 99.0), 1.0))

    monkeypatch.setattr(zoo.CodecModel, "__init__", with_band)
    result = invoke(runner, ["compress", "kart.png", "-o", "k2.stkc", "--json", "--model", tiny_model_dir])
    record = json.loads(result.stdout)[0]
    assert record["unusual_reasons"] == ["base"] and record["base_z"] < -50 and "dB poorer" in result.stderr
    result = invoke(runner, ["compress", "kart.png", "-o", "k3.stkc", "--json", "--no-check", "--model", tiny_model_dir])
    record = json.loads(result.stdout)[0]
    assert "unusual" not in record and "psnr" not in record and "Warning" not in result.stderr


def test_webp_is_swept_only_for_a_warning_or_a_report(runner, workdir, tiny_model_dir, monkeypatch):
    """The comparison with WebP decides nothing: a frame that is not flagged is not compared
    unless --json asks for its figures; a flagged one is, for its warning."""
    swept = []
    original = domain.compare_with_webp
    monkeypatch.setattr(domain, "compare_with_webp", lambda *args: swept.append(1) or original(*args))
    assert invoke(runner, ["compress", "kart.png", "-o", "k.stkc", "--model", tiny_model_dir]).exit_code == 0
    assert swept == []
    result = invoke(runner, ["compress", "kart.png", "-o", "k.stkc", "--force", "--json", "--model", tiny_model_dir])
    assert swept == [1] and json.loads(result.stdout)[0]["webp_nearest"]["bytes"] > 0
    Image.fromarray(flat_artwork()).save("logo.png")
    result = invoke(runner, ["compress", "logo.png", "--model", tiny_model_dir])
    assert result.exit_code == 0 and swept == [1, 1] and "WebP -q" in result.stderr


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


def test_the_default_model_has_a_band():
    from stkcodec import zoo

    band = zoo.shipped()["base_band"][zoo.shipped()["default"]]
    model = zoo.CodecModel.load("default")
    assert model.domain_limits.band == Band(tuple(band["fit"]), band["sd"]) and 0.5 < band["sd"] < 5
    assert 20 < float(np.polyval(band["fit"], 3.5)) < 30  # a frame's base PSNR at a frame's bits per token


def test_images_webp_cannot_code_or_too_large_are_not_compared(runner, workdir, tiny_model_dir, monkeypatch):
    assert domain.comparable(16383, 100) and not domain.comparable(16384, 100)
    assert not domain.comparable(5000, 4000)  # 20 Mpx: WebP's copies would outgrow the codec's memory
    monkeypatch.setattr(domain, "MAX_PIXELS", 100)
    result = invoke(runner, ["compress", "kart.png", "-o", "k.stkc", "--json", "--model", tiny_model_dir])
    assert result.exit_code == 0, result.output
    assert "unusual" not in json.loads(result.stdout)[0] and "not compared with WebP" in result.stderr
