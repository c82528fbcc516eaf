"""Quality levels and what a new user meets (issues 19 and 22), through the command line."""

import json
from pathlib import Path

from PIL import Image

from stkcodec import bitstream
from stkcodec.progress import PlainProgress

from .conftest import make_image
from .test_cli import invoke, runner, workdir  # noqa: F401 (fixtures)
from .test_cli_outputs import one_error_line


def test_compress_at_a_level_info_shows_it_and_the_cut(runner, workdir, tiny_layered_model_dir):
    result = invoke(runner, ["compress", "kart.png", "-q", "3", "--model", tiny_layered_model_dir, "--json",
                             "-o", "kart.stkc"])
    assert result.exit_code == 0, result.output
    record, = json.loads(result.stdout)
    assert record["level"] == 3
    header, _ = bitstream.parse(Path("kart.stkc").read_bytes())
    assert header.quality == 3
    info = invoke(runner, ["info", "kart.stkc", "--json"])
    described = json.loads(info.stdout)
    assert described["level"] == 3 and described["base_bytes"] == header.base_bytes
    assert described["file_bytes"] == Path("kart.stkc").stat().st_size
    assert "cut the file there" in invoke(runner, ["info", "kart.stkc"]).output
    Path("cut.stkc").write_bytes(Path("kart.stkc").read_bytes()[: header.base_bytes])
    for name in ("kart.stkc", "cut.stkc"):
        decoded = invoke(runner, ["decompress", name, "--model", tiny_layered_model_dir, "-o", f"{name}.png"])
        assert decoded.exit_code == 0, decoded.output
    assert Image.open("cut.stkc.png").size == Image.open("kart.stkc.png").size == (150, 100)


def test_a_level_out_of_range_is_one_line_listing_the_valid_ones(runner, workdir, tiny_layered_model_dir,
                                                                   tiny_model_dir):
    for model, valid in ((tiny_layered_model_dir, "valid: 1 to 4"), (tiny_model_dir, "valid: 1)")):
        result = invoke(runner, ["compress", "kart.png", "-q", "9", "--model", model])
        assert result.exit_code == 2 and valid in one_error_line(result)
        assert not Path("kart.stkc").exists()
    result = invoke(runner, ["compress", "kart.png", "-q", "2", "--target-bytes", "500", "--model", NOWHERE_MODEL])
    assert result.exit_code == 2 and "one of" in result.output


NOWHERE_MODEL = "no-such-model"


def test_targets_through_the_cli(runner, workdir, tiny_layered_model_dir):
    result = invoke(runner, ["compress", "kart.png", "--target-bytes", "1", "--model", tiny_layered_model_dir,
                             "-o", "small.stkc"])
    assert result.exit_code == 0 and "even level 1 takes" in result.stderr
    assert bitstream.parse(Path("small.stkc").read_bytes())[0].quality == 1
    result = invoke(runner, ["compress", "kart.png", "--target-psnr", "99", "--model", tiny_layered_model_dir,
                             "-o", "sharp.stkc"])
    assert result.exit_code == 0 and bitstream.parse(Path("sharp.stkc").read_bytes())[0].quality == 4


def test_gray_stays_gray_through_the_cli(runner, workdir, tiny_model_dir):
    make_image(40, 30, seed=3, mode="L").save("gray.png")
    assert invoke(runner, ["compress", "gray.png", "--model", tiny_model_dir]).exit_code == 0
    assert bitstream.parse(Path("gray.stkc").read_bytes())[0].mode == "L"
    assert invoke(runner, ["decompress", "gray.stkc", "--model", tiny_model_dir, "--force"]).exit_code == 0
    with Image.open("gray.png") as decoded:
        assert decoded.mode == "L"


def test_mistakes_that_used_to_pass_silently(runner, workdir, tiny_model_dir):
    assert invoke(runner, ["compress", "kart.png", "--model", tiny_model_dir]).exit_code == 0
    result = invoke(runner, ["compress", "kart.stkc", "-o", "again.stkc", "--model", tiny_model_dir])
    assert result.exit_code == 2 and "did you mean decompress" in one_error_line(result)
    assert invoke(runner, ["compress", "kart.stkc", "-o", "again.stkc", "--force",
                           "--model", tiny_model_dir]).exit_code != 0  # forced: it is not an image Pillow reads
    result = invoke(runner, ["compress", "kart.png", "-o", "kart2.png", "--model", tiny_model_dir])
    assert result.exit_code == 2 and "did you mean decompress" in one_error_line(result)
    assert not Path("kart2.png").exists()
    frames = [make_image(20, 10, seed=s) for s in range(3)]
    frames[0].save("anim.gif", save_all=True, append_images=frames[1:])
    result = invoke(runner, ["compress", "anim.gif", "--model", tiny_model_dir])
    assert result.exit_code == 0 and "frame 1 of 3 coded" in result.stderr


def test_a_single_file_error_names_the_file(runner, workdir, tiny_model_dir):
    assert invoke(runner, ["compress", "kart.png", "--model", tiny_model_dir]).exit_code == 0
    data = Path("kart.stkc").read_bytes()
    Path("short.stkc").write_bytes(data[: len(data) // 2])
    result = invoke(runner, ["decompress", "short.stkc", "--model", tiny_model_dir])
    assert result.exit_code == 2 and one_error_line(result).startswith("Error: short.stkc: ")


def test_plain_progress_lines_for_a_log(monkeypatch):
    import io

    clock = [0.0]
    monkeypatch.setattr("stkcodec.progress.time.monotonic", lambda: clock[0])
    out = io.StringIO()
    progress = PlainProgress(out, every_s=5)
    task = progress.add_task("compress", total=10, info="")
    for _ in range(10):
        clock[0] += 2
        progress.advance(task)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("compress: 3/10 (30%), 0:00:06, 0:00:13 left") and lines[-1].startswith("compress: 10/10")
    short = io.StringIO()
    quick = PlainProgress(short, every_s=5)
    task = quick.add_task("decompress", total=2, info="")
    quick.advance(task, 2)  # work shorter than a line's interval prints nothing while it runs...
    assert short.getvalue() == ""
    with quick:
        pass
    assert short.getvalue().startswith("decompress: 2/2 (100%)")  # ...and its last state at the end
    timed = io.StringIO()
    run = PlainProgress(timed, every_s=5)
    task = run.add_task("train prior", total=5400, info="", unit="s")  # a run by minutes counts seconds
    clock[0] += 684.244
    run.update(task, completed=684.244)
    assert timed.getvalue().startswith("train prior: 0:11:24/1:30:00 (13%), ")


def test_max_pixels_is_the_real_limit_past_pillows_own(runner, workdir, tiny_model_dir, monkeypatch):
    """--max-pixels above Pillow's decompression-bomb limit is honoured (Pillow's limit shrunk
    here to 1,000 pixels, so a 60x60 image stands for one of 200 Mpx); below it, one line."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    make_image(60, 60).save("big.png")
    result = invoke(runner, ["compress", "big.png", "--max-pixels", "10000", "--model", tiny_model_dir])
    assert result.exit_code == 0, result.output
    assert Image.MAX_IMAGE_PIXELS == 1000  # Pillow's own setting is left as it was
    result = invoke(runner, ["compress", "big.png", "--max-pixels", "3000", "--model", tiny_model_dir, "--force"])
    assert result.exit_code != 0 and "exceeds the limit of 3000 (raise it with --max-pixels)" in one_error_line(result)


def test_library_messages_name_parameters_and_the_cli_its_options(tiny_model_dir, tmp_path):
    """The same error reads `max_pixels=` from the library and `--max-pixels` from the command line."""
    import pytest

    from stkcodec.checkpoint import load_model, save_model
    from stkcodec.codec import Codec
    from stkcodec.errors import BadInputError, OutputError
    from stkcodec.train import pick_device

    with pytest.raises(BadInputError) as caught:
        Codec(tiny_model_dir, max_pixels=100).compress(make_image(20, 20))
    assert "(raise it with max_pixels=)" in str(caught.value) and "--" not in str(caught.value)
    assert "(raise it with --max-pixels)" in caught.value.cli_message()
    tokenizer = load_model(Path(tiny_model_dir) / "tokenizer.pt")
    with pytest.raises(OutputError, match=r"exists \(use force=True to replace it\)"):
        save_model(tokenizer, Path(tiny_model_dir) / "tokenizer.pt", force=False)
    from stkcodec.errors import StkcError

    try:
        pick_device("cuda")
    except StkcError as error:  # a machine without CUDA, as CI's
        assert str(error) == "device='cuda': no CUDA device here" and error.cli_message().startswith("--device cuda:")
