"""Files decode to the same tokens under other CPU kernels, thread counts and batch sizes.

Runs benchmarks/portability.py (child processes under ATEN_CPU_CAPABILITY=default/avx2,
MKL/oneDNN limited to AVX2, one thread, STKC_KERNELS=portable, batches of 1 and 64) on a few frames with tiny models,
at every quality level of a layered one.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import make_image

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "portability.py"


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny_model_dir", "tiny_token_layered_model_dir"])
def test_tokens_identical_and_pixels_within_one_level_everywhere(tmp_path, model, request):
    """Every level of a layered model too: an enhancement decodes only if its symbols' checksum holds."""
    frames = tmp_path / "frames"
    frames.mkdir()
    for index in range(3):
        make_image(150, 100, seed=index).save(frames / f"{index}.png")
    completed = subprocess.run([sys.executable, str(SCRIPT), str(frames), "--model", request.getfixturevalue(model),
                                "--json"],
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout)
    assert set(report["decode"]) == {"aten-default", "aten-avx2", "mkl-onednn-avx2", "one-thread", "kernels-portable", "batch-64", "batch-1"}
    for direction in ("decode", "encode"):
        for name, row in report[direction].items():
            levels = 4 if model == "tiny_token_layered_model_dir" else 1
            assert row["tokens_identical"] == row["files"] == 3 * levels, (direction, name, row)
            assert row["max_pixel_diff"] <= 1, (direction, name, row)
