"""A thousand fuzz cases on every run (fuzz/fuzz_stkc.py runs the 100,000 of the benchmark)."""

import importlib.util
import random
from pathlib import Path

import pytest

from stkcodec.codec import Codec
from stkcodec.errors import StkcError

from .conftest import make_image

spec = importlib.util.spec_from_file_location("fuzz_stkc", Path(__file__).resolve().parent.parent / "fuzz" / "fuzz_stkc.py")
fuzz_stkc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fuzz_stkc)


@pytest.fixture(scope="module")
def codec(tiny_codec_model):
    return Codec(tiny_codec_model)


def test_mutated_files_give_only_clean_errors(codec):
    seeds = [codec.compress(make_image(w, h, seed=w)) for w, h in [(40, 30), (13, 7), (1, 1)]]
    rng = random.Random(1234)
    outcomes = {"decoded": 0, "refused": 0}
    for case in range(1000):
        kind, data = fuzz_stkc.mutate(rng.choice(seeds), rng)
        try:
            image = codec.decompress(data, f"case {case}")
        except StkcError as error:
            assert "\n" not in str(error)
            outcomes["refused"] += 1
        else:
            assert image.width * image.height > 0
            outcomes["decoded"] += 1
    assert outcomes["refused"] > 900
