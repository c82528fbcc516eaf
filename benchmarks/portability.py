"""Do `.stkc` files decode to the same tokens and pixels under other CPU kernels (PyTorch's
ATen dispatch, MKL and oneDNN limited to AVX2), thread counts and batch sizes?

Encodes frames in a child process with the native settings, decodes them in children under
each setting below, and the reverse (encode under each setting, decode natively). Every frame
is coded at each quality level asked for (`--quality`, all of the model's by default): the base
tokens are compared, and an enhancement decodes only if its symbols pass their checksum. Reports
the share of files whose tokens match exactly and the largest pixel difference.

    python3 benchmarks/portability.py ../shared/data/supertuxkart/valid --limit 500 [--model DIR] [--quality 1,3,8] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SETTINGS = {
    "native": {},
    "aten-default": {"ATEN_CPU_CAPABILITY": "default"},
    "aten-avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "mkl-onednn-avx2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "one-thread": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    "kernels-portable": {"STKC_KERNELS": "portable"},  # an int8 prior's products in float32, not oneDNN's int8 kernel
    # (the exact networks' products run in torch.matmul, so NumPy's OpenBLAS kernels no longer reach them)
}
BATCHES = {"batch-64": 64, "batch-1": 1}


def qualities(codec, asked: str | None) -> list[int]:
    """`--quality` ("1,3,8"; None: every level of the model)."""
    if not asked:
        return list(range(1, codec.levels + 1))
    return [int(q) for q in asked.split(",")]


def worker(mode: str, folder: Path, model: str, batch: int, inputs: list[str], asked: str | None) -> None:
    """Child process: encode `inputs` into folder/*.stkc at each level, or decode folder/*.stkc
    into tokens + pixels."""
    from stkcodec.codec import Codec
    from stkcodec.imageio import open_image

    codec = Codec(model)
    if mode == "encode":
        for start in range(0, len(inputs), batch):
            chunk = [open_image(path, max_pixels=2**26) for path in inputs[start : start + batch]]
            for quality in qualities(codec, asked):
                for index, data in enumerate(codec.compress_many(chunk, quality=quality), start):
                    (folder / f"{index:05d}-q{quality}.stkc").write_bytes(data)
        return

    names = sorted(folder.glob("*.stkc"))
    tokens, pixels, failures = {}, {}, []
    for start in range(0, len(names), batch):
        chunk = names[start : start + batch]
        files = [path.read_bytes() for path in chunk]
        try:  # a failure is a checksum mismatch: this process computed other probabilities
            decoded = codec.tokens_many(files, [path.name for path in chunk])
            images = codec.decompress_many(files, [path.name for path in chunk])  # enhancements' checksums too
        except Exception as error:  # noqa: BLE001 - reported by the parent, not raised here
            failures.append(str(error))
            continue
        for path, (_, grid), image in zip(chunk, decoded, images):
            tokens[path.stem] = grid.numpy().astype(np.uint16)
            pixels[path.stem] = np.asarray(image)
    np.savez(folder / "decoded.npz", **{f"t{k}": v for k, v in tokens.items()}, **{f"p{k}": v for k, v in pixels.items()})
    (folder / "failures.json").write_text(json.dumps(failures))


def run_child(mode: str, folder: Path, model: str, batch: int, inputs: list[str], env: dict,
              asked: str | None = None) -> float:
    manifest = folder / "inputs.json"
    manifest.write_text(json.dumps(inputs))
    start = time.monotonic()
    quality = ["--quality", asked] if asked else []
    subprocess.run([sys.executable, __file__, "--worker", mode, str(folder), "--model", model, "--batch", str(batch),
                    *quality], env={**os.environ, **env}, check=True)
    return time.monotonic() - start


def load_decoded(folder: Path) -> tuple[dict, dict]:
    failures = json.loads((folder / "failures.json").read_text())
    if failures:
        raise SystemExit(f"{folder.name}: {len(failures)} decode failures, first: {failures[0]}")
    with np.load(folder / "decoded.npz") as stored:
        tokens = {k[1:]: stored[k] for k in stored.files if k.startswith("t")}
        pixels = {k[1:]: stored[k] for k in stored.files if k.startswith("p")}
    return tokens, pixels


def compare(reference: tuple[dict, dict], other: tuple[dict, dict]) -> dict:
    ref_tokens, ref_pixels = reference
    tokens, pixels = other
    same_tokens = sum(np.array_equal(ref_tokens[k], tokens[k]) for k in ref_tokens)
    diffs = [int(np.abs(ref_pixels[k].astype(int) - pixels[k].astype(int)).max()) for k in ref_pixels]
    same_pixels = sum(d == 0 for d in diffs)
    return {"files": len(ref_tokens), "tokens_identical": same_tokens, "pixels_identical": same_pixels,
            "max_pixel_diff": max(diffs, default=0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="?")
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--model", default="default")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", choices=["encode", "decode"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--quality", help="Comma-separated quality levels to code each frame at.  [default: all]")
    args, rest = parser.parse_known_args()
    if args.worker:
        folder = Path(args.data)
        worker(args.worker, folder, args.model, args.batch, json.loads((folder / "inputs.json").read_text()),
               args.quality)
        return
    from stkcodec.data import find_frames

    inputs = [str(p) for p in find_frames(args.data, args.limit)]
    report = {"frames": len(inputs), "quality": args.quality or "all", "decode": {}, "encode": {}}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        native = root / "native"
        native.mkdir()
        report["native_encode_s"] = run_child("encode", native, args.model, 64, inputs, {}, args.quality)
        report["native_decode_s"] = run_child("decode", native, args.model, 64, inputs, {})
        reference = load_decoded(native)
        native_bytes = {p.name: p.read_bytes() for p in native.glob("*.stkc")}
        runs = [(name, env, 64) for name, env in SETTINGS.items() if name != "native"]
        runs += [(name, {}, batch) for name, batch in BATCHES.items()]
        for name, env, batch in runs:
            # decode the native files under this setting
            folder = root / f"decode-{name}"
            folder.mkdir()
            for file_name, data in native_bytes.items():
                (folder / file_name).write_bytes(data)
            seconds = run_child("decode", folder, args.model, batch, inputs, env)
            report["decode"][name] = {**compare(reference, load_decoded(folder)), "seconds": round(seconds, 1)}
            # the reverse: encode under this setting, decode natively
            folder = root / f"encode-{name}"
            folder.mkdir()
            run_child("encode", folder, args.model, batch, inputs, env, args.quality)
            same_files = sum((folder / n).read_bytes() == data for n, data in native_bytes.items())
            if same_files == len(native_bytes):  # the very files decoded natively above
                report["encode"][name] = {"files_identical_to_native": same_files, **compare(reference, reference)}
                continue
            run_child("decode", folder, args.model, 64, inputs, {})  # fails loudly on any checksum error
            report["encode"][name] = {"files_identical_to_native": same_files, **compare(reference, load_decoded(folder))}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['frames']} frames at quality {report['quality']}; native encode {report['native_encode_s']:.1f} s, decode {report['native_decode_s']:.1f} s")
        for direction in ("decode", "encode"):
            for name, row in report[direction].items():
                print(f"{direction:6} {name:16} tokens identical {row['tokens_identical']}/{row['files']}, "
                      f"pixels identical {row['pixels_identical']}/{row['files']}, max pixel diff {row['max_pixel_diff']}"
                      + (f", files identical {row['files_identical_to_native']}" if direction == "encode" else ""))


if __name__ == "__main__":
    main()
