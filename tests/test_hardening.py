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


def test_compact_model_files_hold_the_same_weights_and_id(tmp_path):
    """`stkc train compact`: the weights bit for bit (dtypes included), the same model id, fewer
    bytes; a compact file compacts again to the same weights; a file is never its own output."""
    from click.testing import CliRunner

    from stkcodec.checkpoint import read_checkpoint
    from stkcodec.cli import main

    tokenizer, prior = tiny_models()
    plain = tmp_path / "prior.pt"
    save_model(prior, plain, half=True)
    compact = tmp_path / "prior-compact.pt"
    result = CliRunner().invoke(main, ["train", "compact", str(plain), "-o", str(compact)])
    assert result.exit_code == 0, result.output
    assert compact.stat().st_size < plain.stat().st_size
    before, after = read_checkpoint(plain), read_checkpoint(compact)
    assert before["model_id"] == after["model_id"] and before["state_dict"].keys() == after["state_dict"].keys()
    for name, tensor in before["state_dict"].items():
        assert after["state_dict"][name].dtype == tensor.dtype and torch.equal(after["state_dict"][name], tensor)
    assert torch.load(compact, weights_only=True)["state_dict"] == {}  # the weights are in the compact blob only
    loaded, reference = load_model(compact, kind="prior"), load_model(plain, kind="prior")
    assert loaded.model_id == reference.model_id
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), reference.state_dict().values()))
    again = tmp_path / "again.pt"
    assert CliRunner().invoke(main, ["train", "compact", str(compact), "-o", str(again)]).exit_code == 0
    assert read_checkpoint(again)["model_id"] == before["model_id"]
    refused = CliRunner().invoke(main, ["train", "compact", str(compact), "-o", str(compact), "--force"])
    assert refused.exit_code != 0 and "Traceback" not in refused.output


def _lender_and_borrower(tmp_path):
    """An enhancer model file at a/enhancer.pt and, at plain.pt, one that adopted it with its own
    entropy model (E and D kept): what `stkc train compact --borrow-from` makes a borrower of."""
    import dataclasses

    from stkcodec.enhancer import Enhancer

    from .conftest import tiny_enhancer

    lender_model = tiny_enhancer(tokens=True)
    borrower_model = Enhancer(dataclasses.replace(lender_model.config, leading_channels=(1,)))
    borrower_model.adopt(lender_model, [0.002, 0.01, 0.05])
    with torch.no_grad():
        borrower_model.ctx_out.weight.add_(0.01)  # its own entropy model, E and D kept
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    lender, plain = tmp_path / "a" / "enhancer.pt", tmp_path / "plain.pt"
    save_model(lender_model, lender, half=True)
    save_model(borrower_model, plain, half=True)
    return lender, plain


def test_a_borrowing_model_file_holds_only_its_own_tensors(tmp_path):
    """`stkc train compact --borrow-from`: tensors equal to the lender's are left out and read back
    from it (the same weights and id); a lender moved away, replaced, or borrowing in turn is
    refused with one line; a file never lends to itself."""
    import shutil

    from click.testing import CliRunner

    from stkcodec.checkpoint import read_checkpoint
    from stkcodec.cli import main
    from stkcodec.enhancer import TRANSFORMS

    from .conftest import tiny_enhancer

    lender, plain = _lender_and_borrower(tmp_path)
    borrower = tmp_path / "b" / "enhancer.pt"
    result = CliRunner().invoke(main, ["train", "compact", str(plain), "--borrow-from", str(lender), "-o", str(borrower)])
    assert result.exit_code == 0, result.output
    stored = torch.load(borrower, weights_only=True)
    assert stored["borrowed"]["file"] == "../a/enhancer.pt"
    # every tensor of the lender's but the one changed; the rest networks are the borrower's own
    assert set(stored["borrowed"]["names"]) == set(read_checkpoint(lender)["state_dict"]) - {"ctx_out.weight"}
    assert any(name.startswith(TRANSFORMS) for name in stored["borrowed"]["names"])
    assert borrower.stat().st_size < lender.stat().st_size / 2
    before, after = read_checkpoint(plain), read_checkpoint(borrower)
    assert before["model_id"] == after["model_id"] and before["state_dict"].keys() == after["state_dict"].keys()
    assert all(torch.equal(after["state_dict"][k], v) for k, v in before["state_dict"].items())
    assert load_model(borrower, kind="enhancer").model_id == before["model_id"]
    again = tmp_path / "b" / "again.pt"
    chained = CliRunner().invoke(main, ["train", "compact", str(plain), "--borrow-from", str(borrower), "-o", str(again)])
    assert chained.exit_code != 0 and "borrows tensors itself" in chained.output and "Traceback" not in chained.output
    moved = tmp_path / "elsewhere.pt"
    shutil.copy(borrower, moved)
    with pytest.raises(BadInputError, match="not beside it"):
        load_model(moved)
    save_model(tiny_enhancer(seed=3, tokens=True), lender, half=True)  # another model in the lender's place
    with pytest.raises(ModelMismatchError, match="borrows from model"):
        load_model(borrower)
    itself = CliRunner().invoke(main, ["train", "compact", str(plain), "--borrow-from", str(plain), "-o", str(plain),
                                       "--force"])
    assert itself.exit_code != 0 and "Traceback" not in itself.output


def test_a_borrower_retires_before_its_lender_and_keeps_borrowing_what_it_decodes_with(tmp_path):
    """`stkc train retire` on a borrowing file: it leaves out E, borrows the rest of what it took
    from the same lender, keeps its id; the lender retired after it, both still load with every
    decoding weight as before."""
    from click.testing import CliRunner

    from stkcodec.checkpoint import read_checkpoint
    from stkcodec.cli import main

    lender, plain = _lender_and_borrower(tmp_path)
    borrower = tmp_path / "b" / "enhancer.pt"
    assert CliRunner().invoke(main, ["train", "compact", str(plain), "--borrow-from", str(lender),
                                     "-o", str(borrower)]).exit_code == 0
    full = {path: read_checkpoint(path) for path in (lender, borrower)}
    for path in (borrower, lender):  # the borrower first
        result = CliRunner().invoke(main, ["train", "retire", str(path), "-o", str(path), "--force"])
        assert result.exit_code != 0 and "Traceback" not in result.output  # an input is never its own output
        retired = path.with_name("retired.pt")
        result = CliRunner().invoke(main, ["train", "retire", str(path), "-o", str(retired)])
        assert result.exit_code == 0, result.output
        retired.replace(path)
    stored = torch.load(borrower, weights_only=True)
    assert stored["borrowed"]["file"] == "../a/enhancer.pt"
    assert stored["borrowed"]["names"] and not any(n.startswith("enc_") for n in stored["borrowed"]["names"])
    assert stored["retired"]["names"] and all(n.startswith("enc_") for n in stored["retired"]["names"])
    for path, before in full.items():
        after = read_checkpoint(path)
        kept = {k: v for k, v in before["state_dict"].items() if not k.startswith("enc_")}
        assert after["state_dict"].keys() == kept.keys() and all(torch.equal(after["state_dict"][k], v)
                                                                 for k, v in kept.items())
        model = load_model(path, kind="enhancer")
        assert model.model_id == before["model_id"] and model.retired


def test_a_decode_only_enhancer_decodes_every_level_and_encodes_level_1_only(tmp_path):
    """`stkc train retire`: the file leaves out E, keeps the model id, decodes what the full
    model wrote at every level to the same pixels, encodes level 1 byte for byte, and refuses
    levels 2 and up (and targets) with one line, through the CLI too; damaged or borrowing
    inputs are refused."""
    import shutil
    from pathlib import Path

    import numpy as np
    from click.testing import CliRunner

    from stkcodec.checkpoint import read_checkpoint
    from stkcodec.cli import main
    from stkcodec.codec import Codec

    from .conftest import _model_folder

    (tmp_path / "full").mkdir()
    full = Path(_model_folder(tmp_path / "full", layered=True, tokens=True))
    retired = tmp_path / "retired"
    shutil.copytree(full, retired)
    result = CliRunner().invoke(main, ["train", "retire", str(full / "enhancer.pt"), "-o", str(retired / "enhancer.pt"),
                                       "--force"])
    assert result.exit_code == 0, result.output
    stored = torch.load(retired / "enhancer.pt", weights_only=True)
    assert stored["retired"]["names"] and all(n.startswith("enc_") for n in stored["retired"]["names"])
    model = load_model(retired / "enhancer.pt", kind="enhancer")
    assert model.model_id == load_model(full / "enhancer.pt").model_id and model.retired == tuple(stored["retired"]["names"])
    assert (retired / "enhancer.pt").stat().st_size < (full / "enhancer.pt").stat().st_size
    image = make_image(40, 30, seed=5)
    old, new = Codec(str(full)), Codec(str(retired))
    assert new.model.model_id == old.model.model_id
    for quality in range(1, old.levels + 1):
        data = old.compress(image, quality=quality)
        assert np.array_equal(np.asarray(new.decompress(data)), np.asarray(old.decompress(data)))
    assert new.compress(image, quality=1) == old.compress(image, quality=1)
    for options in ({"quality": 2}, {"target_bytes": 10_000}, {"target_psnr": 30.0}):
        with pytest.raises(BadInputError, match="encodes level 1 only"):
            new.compress(image, **options)
    image.save(tmp_path / "in.png")
    cli = CliRunner().invoke(main, ["compress", str(tmp_path / "in.png"), "--model", str(retired), "-q", "2",
                                    "-o", str(tmp_path / "out.stkc")])
    assert cli.exit_code != 0 and "encodes level 1 only" in cli.output and "Traceback" not in cli.output
    assert not (tmp_path / "out.stkc").exists()
    again = CliRunner().invoke(main, ["train", "retire", str(retired / "enhancer.pt"), "-o", str(tmp_path / "x.pt")])
    assert again.exit_code == 0, again.output  # retiring a decode-only file keeps it as it is
    assert read_checkpoint(tmp_path / "x.pt")["retired"] == read_checkpoint(retired / "enhancer.pt")["retired"]
    damaged = dict(stored, retired={**stored["retired"], "kept_id": "0" * 64})
    torch.save(damaged, tmp_path / "bad.pt")
    with pytest.raises(ModelMismatchError, match="decode-only"):
        load_model(tmp_path / "bad.pt")
    prior = CliRunner().invoke(main, ["train", "retire", str(full / "prior.pt"), "-o", str(tmp_path / "p.pt")])
    assert prior.exit_code != 0 and "decoder needs all of it" in prior.output and "Traceback" not in prior.output
    # a decode-only tokenizer: every file still decodes, nothing encodes, not even its tokens
    files = [old.compress(image, quality=q) for q in range(1, old.levels + 1)]
    result = CliRunner().invoke(main, ["train", "retire", str(full / "tokenizer.pt"), "-o",
                                       str(retired / "tokenizer.pt"), "--force"])
    assert result.exit_code == 0, result.output
    decoder_only = Codec(str(retired))
    assert decoder_only.model.model_id == old.model.model_id and decoder_only.model.tokenizer.retired
    for data in files:
        assert np.array_equal(np.asarray(decoder_only.decompress(data)), np.asarray(old.decompress(data)))
    with pytest.raises(BadInputError, match="decodes only"):
        decoder_only.compress(image, quality=1)
    with pytest.raises(BadInputError, match="decode-only"):
        decoder_only.model.tokenizer.encode(torch.zeros(1, 3, 10, 10))


@pytest.mark.parametrize("damage", ["truncated", "flipped", "shape", "negative", "dtype"])
def test_damaged_compact_weights_are_refused(tmp_path, damage):
    from stkcodec.checkpoint import compact_payload, read_checkpoint

    _, prior = tiny_models()
    plain = tmp_path / "prior.pt"
    save_model(prior, plain, half=True)
    payload = compact_payload(read_checkpoint(plain))
    compact = payload["compact"]
    if damage == "truncated":
        compact["data"] = compact["data"][: len(compact["data"]) // 2].clone()
    elif damage == "flipped":
        compact["data"][len(compact["data"]) // 2] ^= 0x10
    elif damage == "shape":
        compact["shapes"][0] = [10**7, 10**7]
    elif damage == "negative":
        compact["shapes"][0] = [-1] + compact["shapes"][0]
    else:
        compact["dtypes"][0] = "Tensor"
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises((BadInputError, ModelMismatchError)):
        load_model(tmp_path / "bad.pt")


def test_the_shipped_models_fit_their_budget():
    """Every shipped model's files together weigh under 40 MB (models/README.md)."""
    from pathlib import Path

    import stkcodec

    models = Path(stkcodec.__file__).resolve().parent.parent / "models"
    files = list(models.glob("*/*.pt"))
    if not files:
        pytest.skip("no models/ folder beside the package (an installed wheel)")
    assert sum(f.stat().st_size for f in files) < 40_000_000
