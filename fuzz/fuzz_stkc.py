"""Fuzz the `.stkc` parser and decoder with mutations of the conformance vectors.

    python3 fuzz/fuzz_stkc.py [--cases 100000] [--seed 0] [--model default|tiny|DIR] [--seeds formats/vectors]

--seeds is searched recursively: formats/vectors/<model>/*.stkc, every shipped model's files
(the default codec decodes each with the model its header names).

Each case is a seed file mutated by one of: bit flips, truncation, insertion, deletion,
duplication of a span, a header field set to an extreme, or random bytes. It is decoded with
the codec. A case fails if it raises anything but the library's own `StkcError`, or takes
more than --max-seconds. Failing inputs are saved under fuzz/findings/ to reproduce. The
summary gives the counts, the slowest case, and the peak memory of the process.

`--model tiny` fuzzes the same parser and decoder with the tests' tiny random model, whose
seeds are compressed on the spot at the conformance vectors' sizes. A mutated payload is
decoded in full before its checksum can refuse it, so with the shipped model most of the
time goes into running the prior; the tiny model runs the same code about 20x faster.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import struct
import sys
import time
import traceback
from pathlib import Path

_COMMON_FIELDS = {  # name: (offset, struct format), as formats/stkc.md lays them out
    "version": (3, "<B"), "model_id": (4, "<I"), "width": (8, "<H"), "height": (10, "<H"), "patch": (12, "<B"),
    "tile_rows": (13, "<B"), "tile_cols": (14, "<B"),
}
HEADER_FIELDS = {  # by format version (the seed's byte 3)
    1: {**_COMMON_FIELDS, "payload_bytes": (15, "<I"), "crc": (19, "<I")},
    2: {**_COMMON_FIELDS, "colour": (15, "<B"), "level": (16, "<B"), "payload_bytes": (17, "<I"), "crc": (21, "<I")},
}


def extremes(fmt: str) -> list[int]:
    top = 2 ** (8 * struct.calcsize(fmt)) - 1
    return [0, 1, 2, top, top - 1, top // 2, top // 2 + 1]


def mutate(seed: bytes, rng: random.Random) -> tuple[str, bytes]:
    data = bytearray(seed)
    kind = rng.choice(["flip", "flip", "flip", "truncate", "insert", "delete", "duplicate", "header", "header",
                       "random"])
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            position = rng.randrange(len(data))
            data[position] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        data = data[: rng.randrange(len(data))]
    elif kind == "insert":
        position = rng.randrange(len(data) + 1)
        data[position:position] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    elif kind == "delete":
        start = rng.randrange(len(data))
        del data[start : start + rng.randint(1, 16)]
    elif kind == "duplicate":
        start = rng.randrange(len(data))
        span = data[start : start + rng.randint(1, 64)]
        position = rng.randrange(len(data) + 1)
        data[position:position] = span
    elif kind == "header":
        fields = HEADER_FIELDS.get(seed[3] if len(seed) > 3 else 0, HEADER_FIELDS[max(HEADER_FIELDS)])
        for name in rng.sample(sorted(fields), rng.randint(1, 3)):
            offset, fmt = fields[name]
            value = rng.choice(extremes(fmt) + [rng.randrange(2 ** (8 * struct.calcsize(fmt)))])
            if len(data) >= offset + struct.calcsize(fmt):
                struct.pack_into(fmt, data, offset, value)
    else:
        data = bytearray(rng.randrange(256) for _ in range(rng.randint(0, 64)))
        if rng.random() < 0.5:
            data[:4] = seed[:4]
    return kind, bytes(data)


VECTOR_SIZES = [(150, 100), (13, 7), (1, 1), (333, 250)]  # those of formats/vectors/


def seed_files(folder: str | Path) -> list[Path]:
    """The .stkc files under `folder`, recursively: formats/vectors/<model>/ holds each model's."""
    return sorted(Path(folder).rglob("*.stkc"))


def tiny_codec_and_seeds():
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from stkcodec.codec import Codec
    from stkcodec.zoo import CodecModel
    from tests.conftest import make_image, tiny_models

    codec = Codec(CodecModel(*tiny_models()))
    return codec, [codec.compress(make_image(w, h, seed=w)) for w, h in VECTOR_SIZES]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="default")
    parser.add_argument("--seeds", default=str(Path(__file__).resolve().parent.parent / "formats" / "vectors"))
    parser.add_argument("--max-seconds", type=float, default=2.0)
    parser.add_argument("--findings", default=str(Path(__file__).resolve().parent / "findings"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from stkcodec.codec import Codec
    from stkcodec.errors import StkcError

    if args.model == "tiny":
        codec, seeds = tiny_codec_and_seeds()
    else:
        codec = Codec(args.model)
        seeds = [path.read_bytes() for path in seed_files(args.seeds)]
    if not seeds:
        sys.exit(f"no .stkc seed files in {args.seeds}")
    for seed in seeds:  # loads every model the seeds name, so that no case's time includes loading one
        codec.decompress(seed)
    rng = random.Random(args.seed)
    counts = {"cases": 0, "decoded": 0, "clean_errors": 0, "crashes": 0, "slow": 0}
    by_kind: dict[str, int] = {}
    slowest = (0.0, "")
    findings = Path(args.findings)
    start = time.monotonic()
    for case in range(args.cases):
        kind, data = mutate(rng.choice(seeds), rng)
        by_kind[kind] = by_kind.get(kind, 0) + 1
        began = time.perf_counter()
        try:
            codec.decompress(data, f"case {case}")
            counts["decoded"] += 1
        except StkcError:
            counts["clean_errors"] += 1
        except Exception:  # noqa: BLE001 - exactly what the fuzzer looks for
            counts["crashes"] += 1
            findings.mkdir(parents=True, exist_ok=True)
            (findings / f"crash-{args.seed}-{case}.stkc").write_bytes(data)
            (findings / f"crash-{args.seed}-{case}.txt").write_text(traceback.format_exc())
        seconds = time.perf_counter() - began
        if seconds > slowest[0]:
            slowest = (seconds, f"case {case} ({kind})")
        if seconds > args.max_seconds:
            counts["slow"] += 1
            findings.mkdir(parents=True, exist_ok=True)
            (findings / f"slow-{args.seed}-{case}.stkc").write_bytes(data)
        counts["cases"] += 1
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    summary = {**counts, "mutations": by_kind, "seconds": round(time.monotonic() - start, 1),
               "slowest_case_s": round(slowest[0], 3), "slowest_case": slowest[1], "peak_memory_mib": round(peak_mib, 1)}
    print(json.dumps(summary, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in summary.items()))
    if counts["crashes"] or counts["slow"] or peak_mib > 1024:
        sys.exit(1)


if __name__ == "__main__":
    main()
