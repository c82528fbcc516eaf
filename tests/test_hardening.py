"""Safe model loading, crash safety and inputs left untouched."""

import os
import pickle
import signal
import subprocess
import sys
import time

import pytest
import torch

from stkcodec import bitstream
from stkcodec.checkpoint import load_model, save_model
from stkcodec.errors import BadInputError, ModelMismatchError

from .conftest import make_image, tiny_models


class Payload:
    """Unpickling this would create a file: the test checks it never happens."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "stkc-checkpoint", "trap": Payload(str(marker))}, path)
    with pytest.raises(BadInputError, match="not a file stkc can load"):
        load_model(path)
    assert not marker.exists()
    path.write_bytes(pickle.dumps(Payload(str(marker))))
    with pytest.raises(BadInputError, match="not a file stkc can load"):
        load_model(path)
    assert not marker.exists()


def test_weights_that_do_not_match_their_id_are_refused(tmp_path):
    tokenizer, _ = tiny_models()
    path = tmp_path / "tokenizer.pt"
    payload = save_model(tokenizer, path)
    payload["state_dict"]["to_pixels.bias"] = payload["state_dict"]["to_pixels.bias"] + 1
    torch.save(payload, path)
    with pytest.raises(ModelMismatchError, match="do not match the model id"):
        load_model(path)


def test_wrong_kind_and_garbage_model_files(tmp_path):
    tokenizer, _ = tiny_models()
    save_model(tokenizer, tmp_path / "tokenizer.pt")
    with pytest.raises(ModelMismatchError, match="expected a 'prior'"):
        load_model(tmp_path / "tokenizer.pt", kind="prior")
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 100)
    with pytest.raises(BadInputError, match="junk.pt: not a file stkc can load"):
        load_model(tmp_path / "junk.pt")
    with pytest.raises(BadInputError, match="no such file"):
        load_model(tmp_path / "absent.pt")


def test_sigkill_leaves_outputs_complete_or_absent(tmp_path, tiny_model_dir):
    inputs = tmp_path / "in"
    outputs = tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    names = []
    for index in range(150):
        path = inputs / f"{index:03d}.png"
        make_image(60, 40, seed=index).save(path)
        names.append(str(path))
    before = {p.name: p.read_bytes() for p in inputs.iterdir()}
    process = subprocess.Popen([sys.executable, "-m", "stkcodec", "--quiet", "compress", *names, "-o", str(outputs),
                                "--model", tiny_model_dir], env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(outputs.glob("*.stkc")):
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = sorted(outputs.glob("*.stkc"))
    assert 0 < len(written) < 150  # killed in the middle of the batch
    for path in written:
        header, _ = bitstream.parse(path.read_bytes(), name=path.name)  # complete: parses with its full payload
        assert (header.width, header.height) == (60, 40)
    assert all(p.name.startswith(".") for p in outputs.iterdir() if p.suffix != ".stkc")  # only hidden temporaries
    assert {p.name: p.read_bytes() for p in inputs.iterdir()} == before  # inputs untouched
