"""`stkc bench`: the metrics against known values, the rate comparisons, and the command's JSON."""

import json
import math
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from stkcodec import bench
from stkcodec.bench import (
    PSNR_CAP,
    bd_rate,
    bytes_at_psnr,
    find_frames,
    load_frames,
    ms_ssim_rgb,
    ms_ssim_scales,
    psnr_rgb,
    run_stkc,
)
from stkcodec.cli import main
from stkcodec.codec import Codec

from .conftest import make_image

RESULT_KEYS = {"quality", "bpp", "bytes", "psnr-rgb", "ms-ssim-rgb", "encoding_time_ms", "decoding_time_ms",
               "encoding_mpx_per_s", "decoding_mpx_per_s"}


@pytest.fixture
def two_images(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for index in range(3):  # three files, --limit 2 keeps two
        make_image(150, 100, seed=index).save(folder / f"{index}.png")
    return folder


def invoke(args, **kwargs):
    return CliRunner().invoke(main, [str(a) for a in args], **kwargs)


def naive_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM straight from Wang et al.: weighted statistics at every valid 11×11 window position."""
    offsets = np.arange(11) - 5
    kernel = np.exp(-(offsets**2) / (2 * 1.5**2))
    window = np.outer(kernel, kernel) / np.outer(kernel, kernel).sum()
    c1, c2, values = (0.01 * 255) ** 2, (0.03 * 255) ** 2, []
    for channel in range(3):
        a, b = x[..., channel].astype(float), y[..., channel].astype(float)
        for r in range(a.shape[0] - 10):
            for c in range(a.shape[1] - 10):
                pa, pb = a[r : r + 11, c : c + 11], b[r : r + 11, c : c + 11]
                ma, mb = (window * pa).sum(), (window * pb).sum()
                va, vb = (window * (pa - ma) ** 2).sum(), (window * (pb - mb) ** 2).sum()
                cov = (window * (pa - ma) * (pb - mb)).sum()
                values.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(values))


def test_psnr_known_values():
    image = np.asarray(make_image(150, 100, seed=1)).clip(0, 250).astype(np.uint8)
    assert psnr_rgb(image, image) == PSNR_CAP
    assert psnr_rgb(image, image + 5) == pytest.approx(20 * math.log10(255 / 5), abs=1e-9)


def test_ms_ssim_known_values():
    image = np.asarray(make_image(150, 100, seed=1))
    assert ms_ssim_rgb(image, image) == pytest.approx(1.0, abs=1e-12)
    rng = np.random.default_rng(0)
    noisy = [np.clip(image + rng.normal(0, s, image.shape), 0, 255).astype(np.uint8) for s in (5, 20)]
    assert 1 > ms_ssim_rgb(image, noisy[0]) > ms_ssim_rgb(image, noisy[1]) > 0
    # 150×100 leaves room for four scales (100 → 50 → 25 → 12 rows), 256×256 for all five
    assert (ms_ssim_scales(100, 150), ms_ssim_scales(256, 256), ms_ssim_scales(21, 40)) == (4, 5, 1)
    assert math.isnan(ms_ssim_rgb(image[:10, :10], image[:10, :10]))


def test_ms_ssim_single_scale_is_wang_ssim():
    image = np.asarray(make_image(18, 16, seed=2))  # one scale fits: MS-SSIM is plain SSIM
    other = np.clip(image + np.random.default_rng(1).normal(0, 15, image.shape), 0, 255).astype(np.uint8)
    assert ms_ssim_rgb(image, other) == pytest.approx(naive_ssim(image, other), abs=1e-9)


def test_bd_rate():
    rates, psnrs = [0.1, 0.2, 0.4, 0.8, 1.6], [25.0, 28.0, 31.0, 33.5, 36.0]
    assert bd_rate(rates, psnrs, rates, psnrs) == pytest.approx(0, abs=1e-9)
    assert bd_rate(rates, psnrs, [r / 2 for r in rates], psnrs) == pytest.approx(-50, abs=0.5)
    assert bd_rate(rates, psnrs, [r * 2 for r in rates], psnrs) == pytest.approx(100, abs=0.5)
    assert bd_rate(rates[:3], psnrs[:3], rates, psnrs) is None  # three points: no cubic
    assert bd_rate(rates, psnrs, rates, [p + 20 for p in psnrs]) is None  # no common PSNR interval


def test_bytes_at_psnr():
    psnrs, sizes = [30.0, 25.0, 35.0], [800, 400, 1600]
    assert bytes_at_psnr(27.5, psnrs, sizes) == pytest.approx(math.sqrt(400 * 800))
    assert bytes_at_psnr(30.0, psnrs, sizes) == pytest.approx(800)
    assert bytes_at_psnr(24.9, psnrs, sizes) is None and bytes_at_psnr(35.1, psnrs, sizes) is None
    # a lower setting that costs more than a higher one: the cheaper, better setting counts
    assert bytes_at_psnr(24.5, [24.0, 25.0, 26.0], [500, 450, 600]) == pytest.approx(450)


def test_compare_to_stkc_on_the_curve_itself(two_images):
    frames = load_frames(find_frames(two_images, 2))
    jpeg = bench.run_classic(bench.CLASSIC["jpeg"], frames)
    # a pretend stkc sitting exactly on JPEG's q=50 point needs the same bytes; below q=1 it is excluded
    on_curve = bench.Sweep(**{**vars(jpeg), **{k: getattr(jpeg, k)[8:9].copy() for k in ("bytes", "psnr", "ms_ssim",
                                                                                "encode_ms", "decode_ms")}})
    assert jpeg.qualities[8] == 50
    versus = bench.compare_to_stkc(on_curve, jpeg)
    assert versus["mean_ratio"] == pytest.approx(1.0, abs=1e-3) and versus["images"] == 2 and versus["excluded"] == 0
    on_curve.psnr[:] = 5.0
    versus = bench.compare_to_stkc(on_curve, jpeg)
    assert (versus["mean_ratio"], versus["excluded_below"], versus["excluded_above"]) == (None, 2, 0)


def test_stkc_numbers_are_the_codecs(tiny_codec_model):
    codec = Codec(tiny_codec_model)
    images = [make_image(150, 100, seed=s) for s in range(3)] + [make_image(47, 31, seed=9)]
    frames = [bench.Frame(f"img{i}", image, np.asarray(image), 1000, "PNG") for i, image in enumerate(images)]
    sweep = run_stkc(codec, frames)
    assert sweep.bytes[0].tolist() == [len(codec.compress(image)) for image in images]
    for index, image in enumerate(images):
        decoded = np.asarray(codec.decompress(codec.compress(image)))
        assert sweep.psnr[0, index] == pytest.approx(psnr_rgb(np.asarray(image), decoded))
    assert (sweep.encode_ms > 0).all() and (sweep.decode_ms > 0).all()


def test_json_schema(two_images, tiny_model_dir, tiny_codec_model):
    args = ["bench", two_images, "--codecs", "jpeg,webp,stkc", "--limit", 2, "--json", "--model", tiny_model_dir]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["images"] == 2 and {"name", "codecs", "stkc_vs", "bd_rate"} <= set(report)
    assert list(report["codecs"]) == ["jpeg", "webp", "stkc"]
    for name, entry in report["codecs"].items():
        assert entry["available"] is True and entry["settings"] and set(entry["results"]) == RESULT_KEYS
        count = 1 if name == "stkc" else len(bench.CLASSIC[name].qualities)
        assert all(len(values) == count for values in entry["results"].values())
    jpeg = report["codecs"]["jpeg"]
    assert jpeg["results"]["quality"][0] == 1 and "optimize=True" in jpeg["settings"]
    assert jpeg["results"]["bpp"][0] == pytest.approx(8 * jpeg["results"]["bytes"][0] / 15000, abs=1e-3)
    assert 0 < jpeg["results"]["ms-ssim-rgb"][-1] <= 1
    for codec in ("jpeg", "webp"):
        versus = report["stkc_vs"][codec]
        assert versus["images"] + versus["excluded"] == 2 and len(versus["per_image"]) == 2
    assert report["stkc_vs"]["source"]["formats"] == ["PNG"]
    assert isinstance(report["bd_rate"]["webp"]["jpeg"], float)
    for direction in ("encoding", "decoding"):  # megapixels per second: the images' pixels over their time
        # (both figures come from the same measured time, so this holds on a machine of any speed or load)
        results = report["codecs"]["stkc"]["results"]
        assert results[f"{direction}_mpx_per_s"][0] == pytest.approx(
            2 * 15000 / 1000 / (2 * results[f"{direction}_time_ms"][0]), rel=0.01)
    expected = [len(Codec(tiny_codec_model).compress(make_image(150, 100, seed=s))) for s in range(2)]
    assert report["codecs"]["stkc"]["results"]["bytes"] == [pytest.approx(np.mean(expected))]
    assert "MP/s" in result.stderr and "MS-SSIM" in result.stderr and "JPEG: " in result.stderr and "BD-rate (PSNR) of WebP" in result.stderr


def test_missing_codec_is_reported_not_fatal(two_images, monkeypatch):
    real = bench.codec_available
    monkeypatch.setattr(bench, "codec_available", lambda name: (False, "not here") if name == "jxl" else real(name))
    result = invoke(["bench", two_images, "--codecs", "jxl,jpeg", "--limit", 1, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["codecs"]["jxl"] == {**report["codecs"]["jxl"], "available": False, "reason": "not here"}
    assert report["codecs"]["jxl"]["results"]["bpp"] == [] and report["codecs"]["jpeg"]["available"]
    assert "JPEG XL: not available, skipped: not here" in result.stderr
    assert "stkc_vs" not in report  # stkc was not asked for: no model needed either


def test_failing_encoder_is_reported_not_fatal(two_images, monkeypatch):
    def refuse(codec, frames, on_step):
        raise OSError("encoder error -2")

    monkeypatch.setattr(bench, "run_classic", refuse)
    result = invoke(["bench", two_images, "--codecs", "webp", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["codecs"]["webp"]["reason"] == "encoding failed (encoder error -2)"


def test_samples_and_bad_options(two_images, monkeypatch):
    assert [p.name for p in find_frames(None)] == [f"frame{i}.png" for i in range(6)]
    frames = load_frames(find_frames(two_images, 2))
    assert [f.source_bytes for f in frames] == [(two_images / f"{i}.png").stat().st_size for i in range(2)]
    assert frames[0].image.format is None  # so pillow-jxl encodes pixels, never transcodes a source JPEG
    result = invoke(["bench", two_images, "--codecs", "jpeg,gif"])
    assert result.exit_code == 2 and "gif" in result.output
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as when the extra is missing
    result = invoke(["bench", two_images, "--codecs", "jpeg", "--plot", two_images / "rd.png"])
    assert result.exit_code == 2 and "pip install 'stkc[plot]'" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_the_bar_says_which_codec_runs(two_images):
    """In a log (stderr not a terminal) the bar's last line names the codec it ran last."""
    result = invoke(["bench", two_images, "--codecs", "jpeg,webp", "--limit", 1])
    assert result.exit_code == 0, result.output
    assert "bench webp: " in result.stderr and "(100%)" in result.stderr


def test_the_report_goes_to_stdout_and_quiet_silences_the_rest(two_images):
    """`stkc bench > report.txt` keeps the report; --quiet drops progress and notes, not the report."""
    for quiet in ([], ["--quiet"]):
        result = invoke([*quiet, "bench", two_images, "--codecs", "jpeg", "--limit", 1])
        assert result.exit_code == 0, result.output
        assert "JPEG: " in result.stdout and "MS-SSIM" in result.stdout
        assert "MS-SSIM" not in result.stderr
    assert result.stderr == ""
    result = invoke(["--quiet", "bench", two_images, "--codecs", "jpeg", "--limit", 1, "--json"])
    assert result.stderr == "" and json.loads(result.stdout)["images"] == 1


def test_plot(two_images, tmp_path):
    pytest.importorskip("matplotlib")
    result = invoke(["bench", two_images, "--codecs", "jpeg,webp", "--limit", 1, "--plot", tmp_path / "rd.png"])
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "rd.png") as plot:
        assert plot.format == "PNG" and plot.width > 500


def test_summary_sentences():
    from stkcodec.rdplot import summary_lines

    versus = {"mean_ratio": 0.6213, "images": 5, "excluded": 1, "excluded_below": 1, "excluded_above": 0}
    report = {"codecs": {"jpeg": {}, "webp": {}, "stkc": {}}, "bd_rate": {"webp": {"jpeg": -31.25}},
              "stkc_vs": {"webp": versus, "source": {"mean_ratio": 0.0212, "images": 6, "formats": ["PNG"],
                                                      "mean_source_bytes": 26737.3}}}
    lines = summary_lines(report)
    assert lines[0] == ("at equal PSNR stkc needs 0.62× the bytes of WebP (mean over 5 images; 1 excluded: "
                        "stkc's PSNR below WebP's lowest setting on 1, above its highest on 0)")
    assert lines[1].startswith("stkc files are 0.021× the size of the source files (PNG, mean 26,737 B")
    assert lines[2].startswith("BD-rate (PSNR) of WebP against JPEG: -31.2%")
