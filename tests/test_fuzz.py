"""A thousand fuzz cases on every run (fuzz/fuzz_stkc.py runs the 100,000 of the benchmark)."""

import importlib.util
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stkcodec import zoo
from stkcodec.codec import Codec
from stkcodec.errors import StkcError

from .conftest import make_image

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("fuzz_stkc", ROOT / "fuzz" / "fuzz_stkc.py")
fuzz_stkc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fuzz_stkc)


@pytest.fixture(scope="module")
def codec(tiny_codec_model):
    return Codec(tiny_codec_model)


def test_mutated_files_give_only_clean_errors(codec):
    seeds = [codec.compress(make_image(w, h, seed=w)) for w, h in [(40, 30), (13, 7), (1, 1)]]
    originals = [np.asarray(codec.decompress(seed)) for seed in seeds]
    rng = random.Random(1234)
    outcomes = {"decoded": 0, "refused": 0}
    for case in range(1000):
        which = rng.randrange(len(seeds))
        kind, data = fuzz_stkc.mutate(seeds[which], rng)
        try:
            image = codec.decompress(data, f"case {case}")
        except StkcError as error:
            assert "\n" not in str(error)
            outcomes["refused"] += 1
        else:  # a change the checksums let through changed nothing: the original picture, exactly
            assert np.array_equal(np.asarray(image), originals[which]), (case, kind)
            outcomes["decoded"] += 1
    assert outcomes["refused"] > 900


def test_the_fuzzer_finds_every_shipped_model_s_vectors():
    seeds = fuzz_stkc.seed_files(ROOT / "formats" / "vectors")
    assert {path.parent.name for path in seeds} == set(zoo.shipped()["models"])
    assert all(path.read_bytes()[:3] == b"STK" for path in seeds)


@pytest.mark.slow
def test_the_readme_fuzz_command_runs(tmp_path):
    # README: python3 fuzz/fuzz_stkc.py --cases 100000 [--model tiny]; briefly, and findings kept in tmp
    # (no time limit per case here: a test must not fail because the machine is busy; the fuzzer's
    # own run keeps its --max-seconds)
    command = [sys.executable, str(ROOT / "fuzz" / "fuzz_stkc.py"), "--cases", "200", "--model", "tiny", "--json",
               "--findings", str(tmp_path / "findings"), "--max-seconds", "1e9"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    summary = json.loads(completed.stdout)
    assert summary["cases"] == 200 and summary["crashes"] == 0 and summary["clean_errors"] > 150
    assert not (tmp_path / "findings").exists()
