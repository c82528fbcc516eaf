"""What a user of a folder of frames waits for: the CLI's throughput, one file end to end, two
processes at once, and an epoch of a DataLoader over compressed frames. Models side by side.

    python3 benchmarks/throughput.py ../shared/data/supertuxkart/valid \
        --models p5-10bit-groups,default@1,default@3 --limit 100 [--epoch] [--json]

A model may name its quality level after an @ (`default@3`: `stkc compress -q 3`) and its encoder
effort after a +e (`default@1+e0`: `stkc compress -q 1 --effort 0`; without it, the default effort).

For each model: `stkc -v compress` (also with --no-check, without the comparison with WebP)
and `stkc -v decompress` of `limit` frames spread over the folder, in ms per frame of coding
(the CLI's own timing, model loading excluded) and of wall time; `stkc decompress` of one file in a fresh process, end to end, and Python's start-up alone
for scale; two `stkc compress` of 40 frames at once against one alone. With --epoch, the
default model's StkcFrames over every frame of the folder, compressed, in a DataLoader
(batches of 64), frames per second. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(args: list[str], **kwargs) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, check=True, **kwargs)
    return time.perf_counter() - start, done.stderr


def coding_seconds(stderr: str) -> float:
    """The `code` stage of `stkc -v`'s timing line."""
    return float(re.search(r"code (\d+\.\d+)", stderr).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data")
    parser.add_argument("--models", default="default")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--epoch", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from stkcodec.data import find_frames

    stkc = [sys.executable, "-m", "stkcodec"]
    frames = [str(p) for p in find_frames(args.data, args.limit)]
    report: dict = {"frames": len(frames), "python_start_s": run([sys.executable, "-c", "pass"])[0], "models": {}}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for entry in args.models.split(","):
            named, _, effort = entry.partition("+e")
            model, _, quality = named.partition("@")
            level = (["-q", quality] if quality else []) + (["--effort", effort] if effort else [])
            out = scratch / entry
            (out / "stkc").mkdir(parents=True)
            (out / "png").mkdir()
            figures: dict = {}
            wall, stderr = run([*stkc, "-v", "compress", *frames, "-o", str(out / "stkc"), "--model", model, *level])
            figures["compress_ms_per_frame"] = 1000 * coding_seconds(stderr) / len(frames)
            figures["compress_wall_ms_per_frame"] = 1000 * wall / len(frames)
            _, stderr = run([*stkc, "-v", "compress", *frames, "-o", str(out / "stkc"), "--force", "--no-check",
                             "--model", model, *level])
            figures["compress_no_check_ms_per_frame"] = 1000 * coding_seconds(stderr) / len(frames)
            files = sorted(str(p) for p in (out / "stkc").iterdir())
            figures["mean_file_bytes"] = sum(Path(f).stat().st_size for f in files) / len(files)
            wall, stderr = run([*stkc, "-v", "decompress", *files, "-o", str(out / "png")])
            figures["decompress_ms_per_frame"] = 1000 * coding_seconds(stderr) / len(files)
            figures["decompress_wall_ms_per_frame"] = 1000 * wall / len(files)
            one = scratch / "one.png"
            wall, stderr = run([*stkc, "-v", "decompress", files[0], "-o", str(one), "--force"])
            figures["decompress_one_file_s"] = wall
            figures["decompress_one_file_stages"] = stderr.strip().splitlines()[-1]
            alone, _ = run([*stkc, "compress", *frames[:40], "-o", str(out / "stkc"), "--force", "--model", model,
                            *level])
            start = time.perf_counter()
            pair = [subprocess.Popen([*stkc, "compress", *frames[:40], "-o", str(out / "stkc"), "--force", "--model",
                                      model, *level], stderr=subprocess.DEVNULL) for _ in range(2)]
            for process in pair:
                process.wait()
            figures["compress_40_alone_s"] = alone
            figures["compress_40_two_at_once_s"] = time.perf_counter() - start
            figures["two_at_once_slowdown"] = figures["compress_40_two_at_once_s"] / alone
            report["models"][entry] = figures
        if args.epoch:
            report["epoch"] = epoch(args.data, scratch / "epoch")
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(json.dumps(report, indent=2))


def epoch(folder: str, out: Path) -> dict:
    """Every frame of `folder` compressed with the default model, then one DataLoader epoch."""
    from torch.utils.data import DataLoader

    from stkcodec.codec import default_codec
    from stkcodec.data import find_frames
    from stkcodec.dataset import StkcFrames

    out.mkdir()
    paths = find_frames(folder, None)
    run([sys.executable, "-m", "stkcodec", "--quiet", "compress", *map(str, paths), "-o", str(out)])
    default_codec()  # loaded before the clock starts, as a training script would
    loader = DataLoader(StkcFrames(out), batch_size=64, shuffle=True)
    start = time.perf_counter()
    seen = sum(len(batch) for batch in loader)
    seconds = time.perf_counter() - start
    shutil.rmtree(out)
    return {"frames": seen, "seconds": seconds, "frames_per_s": seen / seconds}


if __name__ == "__main__":
    main()
