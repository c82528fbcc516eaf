"""Faster kernels for the exact prior's int8 products, where the CPU has them and they are exact.

The "int8" arithmetic (exact.py) rounds both operands of every linear layer's product to
integers of at most 127 and takes the product in float32, exact because every partial sum stays
below 2**24. A CPU with VNNI or AMX (most x86 server chips since 2019, and recent desktops)
multiplies 8-bit integers into 32-bit sums in one instruction: oneDNN's u8 x s8 product, which
PyTorch exposes as `torch.ops.onednn.qlinear_pointwise`, gives the same integers 3-5x faster
than the float32 product. Integer sums are exact in any order, so the tokens' probabilities,
and every byte, are the same with either kernel, on any machine.

It is used only where all of these hold, else the float32 product runs:
* $STKC_KERNELS is not "portable" (the way to rule it out, and what tests compare against);
* PyTorch reports VNNI or AMX int8 (`torch.cpu.get_capabilities`): without them oneDNN's
  8-bit path pairs products into 16-bit sums that saturate (or halves the weights to avoid it),
  which is not exact;
* the op exists in this PyTorch build, and a self-test at the bound gives exactly the float64
  products: operands of ±127 everywhere (every pair of terms at the largest sum), signs mixed,
  and random ones, over 512 terms.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import torch

ENV = "STKC_KERNELS"
INT8 = 127
ZERO_POINT = 128  # signed operands -q..q go in as unsigned q+128: oneDNN's u8 x s8 product
INT8_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")
# oneDNN sums the unsigned operands' products (up to 255 x 127 a term) and takes off the zero
# point's share afterwards, in float32: exact while that sum stays below 2**24, so at most 518
# terms (measured: 600 terms of 127 x ~120 lose integers). The prior's products have 128 or 512.
MAX_INNER = (2**24 - 1) // ((INT8 + ZERO_POINT) * INT8)


def portable() -> bool:
    """$STKC_KERNELS=portable: only the float32 products, on every machine."""
    value = os.environ.get(ENV, "auto").strip().lower()
    if value not in ("auto", "portable"):
        from .errors import BadInputError

        raise BadInputError(f"{ENV}={value!r}: expected 'auto' or 'portable'")
    return value == "portable"


def _has_int8_instructions() -> bool:
    try:
        capabilities = torch.cpu.get_capabilities()
    except (AttributeError, RuntimeError):
        return False
    return any(capabilities.get(flag, False) for flag in INT8_FLAGS)


class Int8Product:
    """x @ weight_t for integers x (rows, inner) within ±127 and a fixed int8 weight (inner, out),
    inner at most MAX_INNER: oneDNN's 8-bit kernel, the sums returned as float32 integers."""

    def __init__(self, weight_t: np.ndarray) -> None:
        inner, out = weight_t.shape
        if inner > MAX_INNER:
            raise ValueError(f"{inner} terms: the kernel's unsigned sums can pass 2**24 past {MAX_INNER}")
        weight = torch.from_numpy(np.ascontiguousarray(weight_t.T)).to(torch.int8)  # (out, inner)
        self.packed = torch.ops.onednn.qlinear_prepack(weight, None)
        self.scales = torch.ones(out)
        self.zero_points = torch.zeros(out, dtype=torch.int64)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """x: integers within ±127, any float dtype (a float64 `x` is shifted in place)."""
        shifted = np.add(x, ZERO_POINT, out=x if x.dtype == np.float64 else None).astype(np.uint8)
        return torch.ops.onednn.qlinear_pointwise(
            torch.from_numpy(shifted), 1.0, ZERO_POINT, self.packed, self.scales, self.zero_points,
            None, 1.0, 0, torch.float32, "none", [], "").numpy()


def _self_test() -> bool:
    """At MAX_INNER terms: the largest operands (odd sums just below 2**24 before the zero
    point comes off), their negatives, mixed signs, and random ones."""
    rng = np.random.default_rng(0)
    inner = MAX_INNER
    weight = rng.integers(-INT8, INT8 + 1, (inner, 24)).astype(np.float32)
    weight[:, 0], weight[:, 1] = INT8, -INT8
    weight[::2, 2] = -INT8
    weight[:, 3:6] = rng.integers(110, INT8 + 1, (inner, 3))
    x = rng.integers(-INT8, INT8 + 1, (40, inner)).astype(np.float32)
    x[0], x[1] = INT8, -INT8
    x[2, ::2], x[2, 1::2] = INT8, -INT8
    x[3], x[4] = INT8, INT8 - rng.integers(0, 3, inner)
    expected = x.astype(np.float64) @ weight.astype(np.float64)
    got = Int8Product(weight)(x)
    return got.dtype == np.float32 and np.array_equal(got.astype(np.float64), expected)


@functools.cache
def int8_available() -> bool:
    """Whether `Int8Product` runs here, exactly (see the module docstring)."""
    if portable() or not _has_int8_instructions():
        return False
    try:
        return _self_test()
    except (AttributeError, RuntimeError, NotImplementedError):  # no such op, or no oneDNN
        return False


def int8_product(weight_t: np.ndarray) -> Int8Product | None:
    """An `Int8Product` for this weight where the kernel runs here exactly, else None."""
    if weight_t.shape[0] > MAX_INNER or not int8_available():
        return None
    return Int8Product(weight_t)
