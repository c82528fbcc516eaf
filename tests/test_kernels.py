"""The 8-bit kernel of the int8 prior's linear layers (stkcodec/kernels.py): the same integers as
the float32 products wherever it runs, and the same bytes with it and without it."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from stkcodec import exact, kernels
from stkcodec.cli import main
from stkcodec.codec import Codec
from stkcodec.zoo import CodecModel

from .conftest import make_image

needs_kernel = pytest.mark.skipif(not kernels.int8_available(), reason="no exact 8-bit kernel on this CPU")


@pytest.fixture
def portable(monkeypatch):
    """The float32 products only, as on a CPU without the kernel."""
    monkeypatch.setenv(kernels.ENV, "portable")
    kernels.int8_available.cache_clear()
    yield
    monkeypatch.delenv(kernels.ENV)
    kernels.int8_available.cache_clear()


def float64_products(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a.astype(np.float64) @ b.astype(np.float64)


@needs_kernel
@pytest.mark.parametrize("inner", [1, 32, 128, 512, kernels.MAX_INNER])
def test_the_kernel_gives_the_float64_products_at_the_bound(inner):
    rng = np.random.default_rng(inner)
    weight = rng.integers(-127, 128, (inner, 40)).astype(np.float32)
    weight[:, 0], weight[:, 1] = 127, -127
    weight[:, 2:5] = rng.integers(110, 128, (inner, 3))
    product = kernels.Int8Product(weight)
    worst = np.full((3, inner), 127.0)
    near = 127.0 - rng.integers(0, 3, (5, inner))  # odd sums just below the bound
    for x in (worst, -worst, near, rng.integers(-127, 128, (70, inner)).astype(np.float64)):
        got = product(x.copy())
        assert got.dtype == np.float32
        assert np.array_equal(got.astype(np.float64), float64_products(x, weight))


def test_the_kernel_refuses_sums_that_could_pass_float32s_integers():
    assert kernels.MAX_INNER == 518  # 518 x 255 x 127 < 2**24 <= 519 x 255 x 127
    with pytest.raises(ValueError, match="2\\*\\*24"):
        kernels.Int8Product(np.zeros((519, 4), np.float32))
    assert kernels.int8_product(np.zeros((519, 4), np.float32)) is None


@needs_kernel
def test_a_linear_layer_gives_the_same_integers_with_the_kernel_and_without():
    rng = np.random.default_rng(3)
    weight = torch.from_numpy(rng.integers(-127, 128, (48, 32)).astype(np.int8))
    layer = exact.ExactLinear8(weight, torch.rand(48) + 0.5, step=0.01)
    assert layer.kernel is not None
    x = np.round(rng.normal(0, 2000, (5, 9, 32)))  # many inputs past ±127 steps: clipped
    x[0, 0] = 1e9
    with_kernel = layer(x.copy())
    layer.kernel = None
    assert np.array_equal(with_kernel, layer(x.copy()))


def test_portable_turns_the_kernel_off(portable):
    assert not kernels.int8_available()
    layer = exact.ExactLinear8(torch.ones(4, 8, dtype=torch.int8), torch.ones(4), step=1.0)
    assert layer.kernel is None


def test_a_bad_kernels_setting_is_one_line_through_the_cli(monkeypatch, tmp_path):
    monkeypatch.setenv(kernels.ENV, "fastest")
    kernels.int8_available.cache_clear()
    make_image(40, 30).save(tmp_path / "a.png")
    result = CliRunner().invoke(main, ["compress", str(tmp_path / "a.png")])
    kernels.int8_available.cache_clear()
    assert result.exit_code != 0 and "STKC_KERNELS='fastest'" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "a.stkc").exists()


@needs_kernel
def test_the_default_model_codes_the_same_bytes_with_the_kernel_and_without(monkeypatch):
    """A frame at the base level and at level 3: the same file either way, and each decodes
    with the other's arithmetic to the same pixels."""
    image = make_image(150, 100, seed=4)
    fast = Codec(CodecModel.load())
    files = [fast.compress(image, quality=q) for q in (1, 3)]
    monkeypatch.setenv(kernels.ENV, "portable")
    kernels.int8_available.cache_clear()
    try:
        slow = Codec(CodecModel.load())
        assert [slow.compress(image, quality=q) for q in (1, 3)] == files
        for data in files:
            assert np.array_equal(np.asarray(slow.decompress(data)), np.asarray(fast.decompress(data)))
    finally:
        monkeypatch.delenv(kernels.ENV)
        kernels.int8_available.cache_clear()
