"""Every subcommand through click's CliRunner, in an isolated folder, with its error paths."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from stkcodec import __version__, bitstream
from stkcodec.cli import main

from .conftest import make_image


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_image(150, 100, seed=1).save("kart.png")
    make_image(47, 31, seed=2).save("odd.jpg")
    return tmp_path


def invoke(runner, args, **kwargs):
    return runner.invoke(main, [str(a) for a in args], **kwargs)


def test_version_and_help(runner):
    assert __version__ in invoke(runner, ["--version"]).output
    for command in ([], ["compress"], ["decompress"], ["info"], ["train", "tokenizer"], ["train", "prior"],
                    ["tokenize"], ["generate"]):
        result = invoke(runner, [*command, "-h"])
        assert result.exit_code == 0 and "Usage" in result.output


def test_compress_decompress_info_round_trip(runner, workdir, tiny_model_dir):
    result = invoke(runner, ["compress", "kart.png", "--model", tiny_model_dir])
    assert result.exit_code == 0, result.output
    assert Path("kart.stkc").exists()
    assert "kart.png: 150x100 -> " in result.stderr and "bpp" in result.stderr
    result = invoke(runner, ["info", "kart.stkc", "--json"])
    header = json.loads(result.stdout)
    assert header["width"] == 150 and header["token_grid"] == [20, 30] and header["format_version"] == bitstream.VERSION
    assert header["file_bytes"] == Path("kart.stkc").stat().st_size
    assert "model id" in invoke(runner, ["info", "kart.stkc"]).output
    result = invoke(runner, ["decompress", "kart.stkc", "-o", "back.webp", "--model", tiny_model_dir])
    assert result.exit_code == 0, result.output
    with Image.open("back.webp") as image:
        assert image.format == "WEBP" and image.size == (150, 100)


def test_json_output_and_many_files_to_a_folder(runner, workdir, tiny_model_dir):
    Path("out").mkdir()
    result = invoke(runner, ["compress", "kart.png", "odd.jpg", "-o", "out", "--json", "--model", tiny_model_dir])
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert [r["output"] for r in records] == ["out/kart.stkc", "out/odd.stkc"]
    assert records[1]["width"] == 47 and records[1]["bytes"] == Path("out/odd.stkc").stat().st_size
    result = invoke(runner, ["decompress", "out/kart.stkc", "out/odd.stkc", "-o", "out", "--model", tiny_model_dir])
    assert result.exit_code == 0, result.output
    with Image.open("out/odd.png") as image:
        assert image.size == (47, 31)


def test_stdin_to_stdout(runner, workdir, tiny_model_dir):
    data = Path("kart.png").read_bytes()
    compressed = invoke(runner, ["--quiet", "compress", "-", "--model", tiny_model_dir], input=data)
    assert compressed.exit_code == 0 and compressed.stdout_bytes[:3] == b"STK"
    decoded = invoke(runner, ["--quiet", "decompress", "-", "--model", tiny_model_dir], input=compressed.stdout_bytes)
    assert decoded.exit_code == 0 and decoded.stdout_bytes[:8] == b"\x89PNG\r\n\x1a\n"


def test_existing_output_needs_force(runner, workdir, tiny_model_dir):
    Path("kart.stkc").write_bytes(b"precious")
    result = invoke(runner, ["compress", "kart.png", "--model", tiny_model_dir])
    assert result.exit_code == 4 and "exists" in result.output
    assert Path("kart.stkc").read_bytes() == b"precious"
    assert invoke(runner, ["compress", "kart.png", "--force", "--model", tiny_model_dir]).exit_code == 0
    assert Path("kart.stkc").read_bytes()[:3] == b"STK"


@pytest.mark.parametrize("content,message", [(b"", "not a .stkc"), (b"STK\x01abc", "truncated"),
                                              (b"hello world, not a codec file", "not a .stkc")])
def test_bad_stkc_files_are_one_line_errors(runner, workdir, tiny_model_dir, content, message):
    Path("bad.stkc").write_bytes(content)
    result = invoke(runner, ["decompress", "bad.stkc", "--model", tiny_model_dir])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not Path("bad.png").exists()


def test_missing_and_unreadable_inputs(runner, workdir, tiny_model_dir):
    Path("broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    result = invoke(runner, ["compress", "missing.png", "--model", tiny_model_dir])
    assert result.exit_code == 2 and "missing.png: no such file" in result.output
    result = invoke(runner, ["compress", "broken.png", "--model", tiny_model_dir])
    assert result.exit_code == 2 and "broken.png" in result.output and not Path("broken.stkc").exists()
    assert invoke(runner, ["info", "missing.stkc"]).exit_code == 2


def test_one_bad_file_does_not_stop_the_others(runner, workdir, tiny_model_dir):
    Path("broken.png").write_bytes(b"nope")
    Path("out").mkdir()
    result = invoke(runner, ["compress", "kart.png", "broken.png", "odd.jpg", "-o", "out", "--model", tiny_model_dir])
    assert result.exit_code == 2
    assert Path("out/kart.stkc").exists() and Path("out/odd.stkc").exists() and not Path("out/broken.stkc").exists()


def test_wrong_model_is_exit_code_3(runner, workdir, tiny_model_dir, tmp_path):
    from stkcodec.checkpoint import save_model

    from .conftest import tiny_models

    invoke(runner, ["compress", "kart.png", "--model", tiny_model_dir])
    other = tmp_path / "other"
    other.mkdir()
    tokenizer, prior = tiny_models(seed=7)
    save_model(tokenizer, other / "tokenizer.pt")
    save_model(prior, other / "prior.pt")
    result = invoke(runner, ["decompress", "kart.stkc", "-o", "k2.png", "--model", other])
    assert result.exit_code == 3 and "unknown model" in result.output
    assert invoke(runner, ["compress", "kart.png", "-o", "k3.stkc", "--model", tmp_path / "nowhere"]).exit_code == 2


def test_max_pixels(runner, workdir, tiny_model_dir):
    result = invoke(runner, ["compress", "kart.png", "--max-pixels", "100", "--model", tiny_model_dir])
    assert result.exit_code == 2 and "exceeds" in result.output


def test_tokenize_train_prior_and_generate(runner, workdir, tiny_model_dir, frames_dir):
    tokenizer = Path(tiny_model_dir) / "tokenizer.pt"
    result = invoke(runner, ["tokenize", frames_dir, "-o", "tokens.pt", "--tokenizer", tokenizer])
    assert result.exit_code == 0, result.output
    assert invoke(runner, ["tokenize", frames_dir, "-o", "tokens.pt", "--tokenizer", tokenizer]).exit_code == 4
    result = invoke(runner, ["--quiet", "train", "prior", "--tokens", "tokens.pt", "--valid-tokens", "tokens.pt",
                             "--steps", "3", "--batch-size", "2", "--d-model", "16", "--layers", "1", "--heads", "2",
                             "-o", "prior.pt", "--checkpoint-dir", "ck"])
    assert result.exit_code == 0, result.output
    from stkcodec.checkpoint import read_checkpoint

    payload = read_checkpoint("prior.pt", kind="prior")
    assert payload["metrics"]["valid_bits_per_image"] > 0
    assert payload["provenance"]["train"]["tokenizer_id"] == read_checkpoint(tokenizer)["model_id"]
    model = Path("model")
    model.mkdir()
    (model / "tokenizer.pt").write_bytes(tokenizer.read_bytes())
    Path("prior.pt").rename(model / "prior.pt")
    result = invoke(runner, ["generate", "-n", "3", "-o", "gen", "--seed", "1", "--sheet", "sheet.png", "--model", model])
    assert result.exit_code == 0, result.output
    first = [Path(f"gen/{i:04d}.png").read_bytes() for i in range(3)]
    assert invoke(runner, ["generate", "-n", "3", "-o", "gen", "--seed", "1", "--model", model]).exit_code == 4
    assert invoke(runner, ["generate", "-n", "3", "-o", "gen", "--seed", "1", "--force", "--model", model]).exit_code == 0
    assert [Path(f"gen/{i:04d}.png").read_bytes() for i in range(3)] == first
    with Image.open("sheet.png") as sheet:
        assert sheet.width > 150


def test_prior_refuses_tokens_of_another_tokenizer(runner, workdir, tiny_model_dir, frames_dir, tmp_path):
    from stkcodec.checkpoint import save_model

    from .conftest import tiny_models

    invoke(runner, ["tokenize", frames_dir, "-o", "a.pt", "--tokenizer", Path(tiny_model_dir) / "tokenizer.pt"])
    save_model(tiny_models(seed=5)[0], tmp_path / "other.pt")
    invoke(runner, ["tokenize", frames_dir, "-o", "b.pt", "--tokenizer", tmp_path / "other.pt"])
    result = invoke(runner, ["train", "prior", "--tokens", "a.pt", "--valid-tokens", "b.pt", "--steps", "1"])
    assert result.exit_code == 3 and "tokenizer" in result.output


def test_files_coded_in_batches_are_the_files_coded_alone(runner, workdir, tiny_model_dir, monkeypatch):
    """compress and decompress take several files a batch (the prior runs them at once), never
    more pixels in all than cli_codec.BATCH_PIXELS (a larger one goes alone), and batching
    changes no byte."""
    from stkcodec import cli_codec
    from stkcodec.codec import Codec

    sizes = []
    for name in ("encode_many", "decompress_many"):
        original = getattr(Codec, name)

        def spy(self, items, *args, _original=original, **kwargs):
            if kwargs.get("errors") == "collect":  # the CLI's call (it calls itself to collect errors)
                sizes.append(len(items))
            return _original(self, items, *args, **kwargs)

        monkeypatch.setattr(Codec, name, spy)
    make_image(60, 40, seed=3).save("small.png")
    files = ["kart.png", "odd.jpg", "small.png"]
    for folder in ("together", "alone", "budget"):
        Path(folder).mkdir()
    assert invoke(runner, ["compress", *files, "-o", "together", "--model", tiny_model_dir]).exit_code == 0
    assert sizes[0] == 3  # all in one batch, collected errors and all
    for file in files:
        assert invoke(runner, ["compress", file, "-o", "alone", "--model", tiny_model_dir]).exit_code == 0
    monkeypatch.setattr(cli_codec, "BATCH_PIXELS", 5000)  # kart.png (15,000 pixels) goes alone
    sizes.clear()
    assert invoke(runner, ["compress", *files, "-o", "budget", "--model", tiny_model_dir]).exit_code == 0
    assert sizes == [1, 2]
    for file in files:
        name = Path(file).with_suffix(".stkc").name
        assert Path("together", name).read_bytes() == Path("alone", name).read_bytes() == Path("budget", name).read_bytes()
    sizes.clear()
    coded = [str(Path("budget", Path(f).with_suffix(".stkc").name)) for f in files]
    assert invoke(runner, ["decompress", *coded, "--model", tiny_model_dir]).exit_code == 0
    assert sizes == [1, 2]
