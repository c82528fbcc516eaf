"""What a new user meets at the command line (issue 16): outputs that cannot be written, an output
that is the input, errors without internals, progress and summaries, -v/--quiet, help, a fast `info`."""

import errno
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import click
import pytest
from PIL import Image

from stkcodec.cli import main

from .conftest import make_image
from .test_cli import invoke, runner, workdir  # noqa: F401 (fixtures)

NOWHERE = "no-such-model"  # an output refused with exit 4 (not 2) here was checked before the model was looked for


def one_error_line(result) -> str:
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.mark.parametrize("args,shown", [
    (["compress", "kart.png", "-o", "/proc/x.stkc"], "/proc/x.stkc: no such file or directory"),
    (["compress", "kart.png", "-o", "notes.txt/out.stkc"], "notes.txt/out.stkc: not a directory"),
    (["decompress", "kart.png", "-o", "/proc/x.png"], "/proc/x.png: no such file or directory"),
    (["generate", "-n", "2", "-o", "notes.txt/gen"], "notes.txt/gen: not a directory"),
    (["generate", "-n", "2", "-o", "gen", "--sheet", "/proc/sheet.png"], "/proc/sheet.png: no such file or directory"),
])
def test_an_output_that_cannot_be_written_is_one_line_and_exit_4_before_the_model(runner, workdir, args, shown):
    Path("notes.txt").write_text("a file, so notes.txt/anything cannot be created\n")
    result = invoke(runner, [*args, "--model", NOWHERE])
    assert result.exit_code == 4
    assert one_error_line(result) == f"Error: cannot write {shown}"


def test_tokenize_checks_its_output_before_the_tokenizer(runner, workdir, frames_dir):
    result = invoke(runner, ["tokenize", frames_dir, "-o", "/proc/tokens.pt", "--tokenizer", "absent.pt"])
    assert result.exit_code == 4 and one_error_line(result).startswith("Error: cannot write /proc/tokens.pt")


def fill_disk_at(monkeypatch, name: str) -> None:
    """The disk is full when a file called `name` is written (its fsync fails as on a full disk)."""
    fsync = os.fsync

    def full_at_name(fd):
        if name in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", full_at_name)


def test_a_batch_writes_every_output_it_can(runner, workdir, tiny_model_dir, monkeypatch):
    result = invoke(runner, ["compress", "kart.png", "/proc/version", "--model", tiny_model_dir])
    assert result.exit_code == 4
    assert "Error: cannot write /proc/version.stkc: " in result.stderr
    assert Path("kart.stkc").read_bytes()[:3] == b"STK"
    assert result.stderr.strip().splitlines()[-1].endswith("; 1 failed")

    fill_disk_at(monkeypatch, "odd.stkc")
    Path("out").mkdir()
    result = invoke(runner, ["compress", "odd.jpg", "kart.png", "-o", "out", "--model", tiny_model_dir])
    assert result.exit_code == 4
    assert "Error: cannot write out/odd.stkc: no space left on device" in result.stderr
    assert [p.name for p in Path("out").iterdir()] == ["kart.stkc"]  # and no temporary left behind


def test_generate_writes_the_images_it_can(runner, workdir, tiny_model_dir, monkeypatch):
    fill_disk_at(monkeypatch, "0001.png")
    result = invoke(runner, ["generate", "-n", "3", "-o", "gen", "--model", tiny_model_dir])
    assert result.exit_code == 4
    assert "Error: cannot write gen/0001.png: no space left on device" in result.stderr
    assert sorted(p.name for p in Path("gen").iterdir()) == ["0000.png", "0002.png"]
    assert result.stderr.strip().splitlines()[-1].endswith("; 1 not written")


def test_an_output_that_is_the_input_is_refused_even_with_force(runner, workdir, tiny_model_dir):
    Image.open("odd.jpg").save("same.jpg")
    original = Path("same.jpg").read_bytes()
    Path("link.stkc").symlink_to("kart.png")
    os.link("kart.png", "hard.stkc")
    for output in ["same.jpg", "./same.jpg", str(Path("same.jpg").resolve())]:
        result = invoke(runner, ["compress", "same.jpg", "-o", output, "--force", "--model", NOWHERE])
        assert result.exit_code == 4 and "is the input same.jpg" in one_error_line(result)
    assert Path("same.jpg").read_bytes() == original
    for output in ["link.stkc", "hard.stkc"]:
        result = invoke(runner, ["compress", "kart.png", "-o", output, "--force", "--model", NOWHERE])
        assert result.exit_code == 4 and "is the input kart.png" in one_error_line(result)
    with Image.open("kart.png") as image:
        assert image.size == (150, 100)
    Path("a.stkc").write_bytes(b"STK not really")
    result = invoke(runner, ["compress", "kart.png", "a.stkc", "-o", ".", "--force", "--model", tiny_model_dir])
    assert result.exit_code == 4 and "a.stkc: is the input a.stkc" in result.stderr
    assert Path("a.stkc").read_bytes() == b"STK not really" and Path("kart.stkc").exists()


def test_tokenize_refuses_to_overwrite_its_tokenizer(runner, workdir, frames_dir, tiny_model_dir):
    tokenizer = Path("tokenizer.pt")
    tokenizer.write_bytes((Path(tiny_model_dir) / "tokenizer.pt").read_bytes())
    before = tokenizer.read_bytes()
    result = invoke(runner, ["tokenize", frames_dir, "-o", "./tokenizer.pt", "--tokenizer", tokenizer, "--force"])
    assert result.exit_code == 4 and "is the input" in one_error_line(result)
    assert tokenizer.read_bytes() == before


def test_errors_name_files_not_python_objects(runner, workdir, tiny_model_dir):
    Path("photo.txt").write_text("not a picture\n")
    result = invoke(runner, ["compress", "photo.txt", "--model", tiny_model_dir])
    assert result.exit_code == 2
    assert one_error_line(result) == "Error: photo.txt: not an image Pillow can read"
    result = invoke(runner, ["compress", "-", "-o", "x.stkc", "--model", tiny_model_dir], input=b"hello")
    assert one_error_line(result) == "Error: stdin: not an image Pillow can read"


def test_decompress_refuses_a_stkc_output_before_decoding(runner, workdir):
    Path("a.stkc").write_bytes(b"whatever: never read")
    for output in ["out.stkc", "a.stkc"]:
        result = invoke(runner, ["decompress", "a.stkc", "-o", output, "--force", "--model", NOWHERE])
        assert result.exit_code == 4
        assert one_error_line(result) == f"Error: {output}: cannot write a decoded image as .stkc (use `stkc compress`)"
    assert not Path("out.stkc").exists()


def test_binary_output_is_not_written_to_a_terminal(runner, workdir, monkeypatch):
    monkeypatch.setattr("stkcodec.cli_codec.stdout_is_terminal", lambda: True)
    for command, what in [("compress", "compressed data"), ("decompress", "image data")]:
        result = invoke(runner, [command, "-", "--model", NOWHERE], input=b"anything")
        assert result.exit_code == 4 and result.stdout == ""
        assert one_error_line(result).startswith(f"Error: refusing to write {what} to a terminal")


def test_stdin_to_stdout_without_deprecation_warnings(runner, workdir, tiny_model_dir):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compressed = invoke(runner, ["compress", "-", "--quiet", "--model", tiny_model_dir],
                            input=Path("kart.png").read_bytes())
        decoded = invoke(runner, ["decompress", "-", "--quiet", "--model", tiny_model_dir],
                         input=compressed.stdout_bytes)
    assert compressed.exit_code == 0 and decoded.stdout_bytes[:4] == b"\x89PNG"
    assert compressed.stderr == "" and decoded.stderr == ""  # --quiet after the subcommand
    assert not [w for w in caught if issubclass(w.category, DeprecationWarning)]


class RecordingProgress:
    """Stands in for the rich bar: at each advance, how many outputs `folder` holds."""

    def __init__(self) -> None:
        self.folder, self.steps = None, []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def add_task(self, *args, **kwargs):
        return 0

    def advance(self, task, amount=1):
        self.steps.append((amount, len(list(self.folder.iterdir()))))


def test_the_bar_advances_per_file_and_a_summary_ends_the_run(runner, workdir, tiny_model_dir, monkeypatch):
    progress = RecordingProgress()
    monkeypatch.setattr("stkcodec.progress.make_progress", lambda disable: progress)
    for index in range(3):
        make_image(60, 40, seed=index).save(f"f{index}.png")
    progress.folder = Path("packed")
    progress.folder.mkdir()
    result = invoke(runner, ["compress", "f0.png", "f1.png", "f2.png", "-o", "packed", "--model", tiny_model_dir])
    assert result.exit_code == 0, result.output
    assert progress.steps == [(1, 1), (1, 2), (1, 3)]
    total = sum(p.stat().st_size for p in progress.folder.iterdir())
    pattern = rf"3 files, [\d,]+ B -> {total:,} B \(\d+\.\d{{3}} bpp\), \d+\.\d s"
    assert re.fullmatch(pattern, result.stderr.strip().splitlines()[-1])

    files = sorted(progress.folder.glob("*.stkc"))
    progress.folder, progress.steps = Path("unpacked"), []
    progress.folder.mkdir()
    result = invoke(runner, ["decompress", *files, "-o", "unpacked", "--model", tiny_model_dir])
    assert result.exit_code == 0, result.output
    assert progress.steps == [(1, 1), (1, 2), (1, 3)]
    pattern = rf"3 files, {total:,} B \(\d+\.\d{{3}} bpp\) -> [\d,]+ B, \d+\.\d s"
    assert re.fullmatch(pattern, result.stderr.strip().splitlines()[-1])


def test_quiet_and_verbose_work_after_the_subcommand(runner, workdir, tiny_model_dir):
    result = invoke(runner, ["compress", "kart.png", "--quiet", "--model", tiny_model_dir])
    assert result.exit_code == 0 and result.stderr == ""
    result = invoke(runner, ["compress", "kart.png", "-o", "k.stkc", "-v", "--model", tiny_model_dir])
    assert result.exit_code == 0
    model_id = json.loads(invoke(runner, ["info", "k.stkc", "--json"]).stdout)["model_id"]
    assert f"model: {tiny_model_dir} (codec id {model_id})" in result.stderr
    assert re.search(r"seconds: load [\d.]+, read [\d.]+, code [\d.]+, write [\d.]+", result.stderr)


@pytest.mark.slow
def test_verbose_in_a_real_process_has_no_pillow_dump_and_a_full_disk_is_one_line(workdir, tiny_model_dir):
    exif = Image.Exif()
    exif[0x010F] = "kart cam"  # Make: Pillow logs each EXIF tag at DEBUG
    make_image(60, 40).save("exif.jpg", exif=exif)
    with open("exif.jpg", "rb") as stdin, open("/dev/full", "wb") as stdout:
        process = subprocess.run([sys.executable, "-m", "stkcodec", "compress", "-", "-v", "--model", tiny_model_dir],
                                 stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, text=True,
                                 env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert process.returncode == 4
    assert "model: " in process.stderr and "seconds: load" in process.stderr
    assert "kart cam" not in process.stderr and "Tag" not in process.stderr
    assert "Error: cannot write stdout: no space left on device" in process.stderr.splitlines()
    assert "Traceback" not in process.stderr


@pytest.mark.parametrize("name", ["compress", "decompress", "info", "bench"])
def test_every_codec_option_has_help_and_its_default(name):
    for param in main.commands[name].params:
        if not isinstance(param, click.Option) or param.name == "help":
            continue
        assert param.help, f"{name} {param.opts[0]} has no help line"
        if not param.is_flag:
            assert (param.show_default and param.default is not None) or "[default: " in param.help, \
                f"{name} {param.opts[0]} does not show its default"


def test_compress_help_says_where_output_goes(runner):
    text = " ".join(invoke(runner, ["compress", "-h"]).output.split())  # help wraps lines
    assert "[default: beside each input, its suffix replaced by .stkc" in text
    assert "--quiet" in text and "--verbose" in text


def test_info_says_not_a_shipped_model(runner, workdir, tiny_model_dir):
    assert invoke(runner, ["compress", "kart.png", "--model", tiny_model_dir]).exit_code == 0
    assert "shipped model: not a shipped model" in invoke(runner, ["info", "kart.stkc"]).output
    assert json.loads(invoke(runner, ["info", "kart.stkc", "--json"]).stdout)["shipped_model"] is None


@pytest.mark.slow
def test_info_does_not_import_torch(workdir, tiny_model_dir, runner):
    invoke(runner, ["compress", "kart.png", "--model", tiny_model_dir])
    script = ("import sys\nfrom click.testing import CliRunner\nfrom stkcodec.cli import main\n"
              "result = CliRunner().invoke(main, ['info', 'kart.stkc'])\n"
              "assert result.exit_code == 0, result.output\n"
              "print('torch' in sys.modules)")
    process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert process.returncode == 0, process.stderr
    assert process.stdout.strip() == "False"
