#!/usr/bin/env bash
# Train the shipped enhancement layer further on a GPU machine (the `device` tool), resuming from
# the committed weights of the default (its architecture, levels and λs as they are; the frames'
# base tokens and reconstructions are rebuilt there, from the carried frames). Nothing depends on
# it: the CPU recipe in models/README.md stands alone.
#
# The machine sees the working tree only, so carry a folder of frames with it (64 MiB at most:
# about 3,000 JPEG frames), e.g. from the project root:
#     python3 - <<'PY'
#     import shutil, pathlib; src = sorted(pathlib.Path("../shared/data/supertuxkart/train").glob("*.jpg"))
#     out = pathlib.Path("gpu-frames"); out.mkdir(exist_ok=True)
#     [shutil.copy(p, out) for p in src[:: max(1, len(src) // 3000)]]
#     PY
# then run this script there with carry ["gpu-frames"] and a timeout that leaves time to fetch
# $OUT/enhancer.pt. Arguments: minutes of training (default 8).
set -euo pipefail
minutes="${1:-8}"
python3 -m pip install --quiet -e . 2>/dev/null || python3 -m pip install --quiet -e . --no-deps
out="${OUT:-gpu-out}"; mkdir -p "$out"
# --augmented: as many colour-transformed frames again (data.ColourAugment), as the CPU recipe now does
n="$(find gpu-frames -name '*.jpg' | wc -l)"
stkc train enhancer --data gpu-frames --frames "$n" --mirrored --augmented "$n" \
    --device cuda --batch-size 32 --lr 5e-4 --minutes "$minutes" \
    --resume "$(python3 -c 'from stkcodec import zoo; print(zoo.model_file(zoo.resolve(None), "enhancer.pt"))')" \
    --checkpoint-dir "$out/checkpoints" --checkpoint-minutes 2 -o "$out/enhancer.pt" --force --quiet
python3 - "$out/enhancer.pt" <<'PY'
import sys, torch
payload = torch.load(sys.argv[1], weights_only=True)
print("trained to step", payload["step"], {k: round(v, 4) for k, v in payload["metrics"].items()})
PY
