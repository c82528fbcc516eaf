"""The README's examples run, so the docs cannot drift from the code: its Python example (the
public stkcodec.compress/decompress API) and its quick start's stkc commands, with the shipped
default model on one sample frame, in a temporary folder."""

import re
import shlex
import shutil
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image

from stkcodec.cli import main

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def code_blocks(language: str, heading: str) -> list[str]:
    """The ```language blocks of the README section that starts with `heading`."""
    section = README.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


def test_python_example_runs(tmp_path, monkeypatch):
    example, = code_blocks("python", "Python")
    monkeypatch.chdir(tmp_path)
    shutil.copy(ROOT / "stkcodec" / "samples" / "frame0.png", "frame.png")
    import stkcodec

    with Image.open("frame.png") as frame:
        Path("frame.stkc").write_bytes(stkcodec.compress(frame))  # the file the example's last line opens
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)
    data, image = namespace["data"], namespace["image"]
    assert isinstance(data, bytes) and data[:3] == b"STK"
    with Image.open("frame.png") as frame:
        assert image.size == frame.size
    with Image.open("frame.stkc") as opened:  # the Pillow plugin decodes what decompress gives
        assert np.array_equal(np.asarray(opened.convert("RGB")), np.asarray(image.convert("RGB")))


def test_quick_start_commands_run(tmp_path, monkeypatch):
    block, = code_blocks("bash", "Quick start")
    first_line = block.splitlines()[0]
    commands = [shlex.split(part) for part in first_line.split("&&")]
    stkc_commands = [command[1:] for command in commands if command[0] == "stkc"]
    assert [command[0] for command in commands] == ["pip", "pip", "stkc", "stkc"]  # installs, then the main job
    monkeypatch.chdir(tmp_path)
    (tmp_path / "stkcodec" / "samples").mkdir(parents=True)
    shutil.copy(ROOT / "stkcodec" / "samples" / "frame0.png", tmp_path / "stkcodec" / "samples" / "frame0.png")
    for arguments in stkc_commands:
        result = CliRunner().invoke(main, arguments)
        assert result.exit_code == 0, (arguments, result.output)
    with Image.open("frame0.png") as decoded, Image.open(ROOT / "stkcodec" / "samples" / "frame0.png") as source:
        assert decoded.size == source.size
    assert Path("frame0.stkc").read_bytes()[:3] == b"STK"
    assert "python3 -m pytest -q -p no:cacheprovider tests" in (ROOT / ".ci" / "run").read_text()


def test_dataset_example_runs(tmp_path, monkeypatch):
    """The README's DataLoader over compressed frames, on two compressed sample frames."""
    example, = code_blocks("python", "Training from compressed frames")
    monkeypatch.chdir(tmp_path)
    Path("frames").mkdir()
    for name in ("frame0", "frame1"):
        shutil.copy(ROOT / "stkcodec" / "samples" / f"{name}.png", f"{name}.png")
        assert CliRunner().invoke(main, ["compress", f"{name}.png", "-o", f"frames/{name}.stkc"]).exit_code == 0
    namespace: dict = {}
    exec(compile(example.replace("batch_size=64", "batch_size=2"), "README.md", "exec"), namespace)
    assert tuple(namespace["frames"].shape) == (2, 3, 100, 150) and str(namespace["frames"].dtype) == "torch.uint8"
