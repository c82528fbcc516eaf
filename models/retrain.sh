#!/usr/bin/env bash
# Retrain every part of a stkc model from nothing, in one resumable chain: the tokenizer, the
# group prior (a raster prior first, which the group prior starts from) and the enhancement
# layer. Budgets are in steps, so a run beside other work gives the same model, only later;
# the minutes are this machine's (2 cores, nothing else running), see models/README.md.
#
#   bash models/retrain.sh [WORK]      # WORK: a folder outside the repository (default: retrain)
#
# Stop it at any time (Ctrl-C, a killed shell, a lost machine): run the same command again and
# it skips the stages whose output exists and resumes the one it was in from its checkpoint.
# DATA (default ../shared/data/supertuxkart) holds train/ and valid/. The result is a model
# folder, WORK/model/{tokenizer,prior,enhancer}.pt, which `--model WORK/model` reads.
#
# FROM=FOLDER (optional) holds finished parts of an earlier run ({tokenizer,prior,enhancer}.pt, and
# raster.pt, the raster prior,
# e.g. docs/retrain-5h, committed so that a run longer than a session can go on in the next): each
# is copied into WORK/model and its stage skipped; NAME-checkpoint.pt (with NAME-best.pt and
# NAME-metrics.jsonl) resumes a stage that an earlier session stopped (Ctrl-C saves a checkpoint).
set -euo pipefail

WORK=${1:-retrain}
DATA=${DATA:-../shared/data/supertuxkart}
TRAIN=$DATA/train
VALID=$DATA/valid
LAMBDAS=0.001,0.0017,0.0029,0.005,0.0085,0.0145,0.025
mkdir -p "$WORK/model"
for part in tokenizer prior enhancer; do
    if [ -n "${FROM:-}" ] && [ -e "$FROM/$part.pt" ] && [ ! -e "$WORK/model/$part.pt" ]; then
        cp "$FROM/$part.pt" "$WORK/model/$part.pt"
    fi
done
if [ -n "${FROM:-}" ] && [ -e "$FROM/raster.pt" ] && [ ! -e "$WORK/raster.pt" ]; then
    cp "$FROM/raster.pt" "$WORK/raster.pt"  # the raster prior the group prior starts from
fi
# A stage stopped mid-run in an earlier session (FROM/NAME-checkpoint.pt, with NAME-best.pt and
# NAME-metrics.jsonl beside it) goes on from its checkpoint, in a run folder of its own.
for name in tokenizer raster groups enhancer; do
    if [ -n "${FROM:-}" ] && [ -e "$FROM/$name-checkpoint.pt" ] && [ ! -e "$WORK/$name.pt" ] \
            && ! ls "$WORK/ckpt-$name"/*/checkpoint.pt > /dev/null 2>&1; then
        run=$WORK/ckpt-$name/from-earlier-session
        mkdir -p "$run"
        cp "$FROM/$name-checkpoint.pt" "$run/checkpoint.pt"
        if [ -e "$FROM/$name-best.pt" ]; then cp "$FROM/$name-best.pt" "$run/best.pt"; fi
        if [ -e "$FROM/$name-metrics.jsonl" ]; then cp "$FROM/$name-metrics.jsonl" "$run/metrics.jsonl"; fi
    fi
done
log() { printf '%s %s\n' "$(date -u +%FT%TZ)" "$*" | tee -a "$WORK/stages.log"; }

# train KIND NAME OPTIONS...: one `stkc train` run whose checkpoints live in WORK/ckpt-NAME; its
# best.pt (picked on valid) becomes WORK/NAME.pt. A run already begun resumes from its checkpoint.
train() {
    local kind=$1 name=$2; shift 2
    local out=$WORK/$name.pt dir=$WORK/ckpt-$name
    if [ -e "$out" ]; then return; fi
    local checkpoint
    checkpoint=$(ls -1 "$dir"/*/checkpoint.pt 2>/dev/null | tail -n 1 || true)
    log "start $name${checkpoint:+ (resuming $checkpoint)}"
    if [ -n "$checkpoint" ]; then
        stkc train "$kind" --resume "$checkpoint" --quiet || exit 1
    else
        stkc train "$kind" "$@" --checkpoint-dir "$dir" -o "$dir/last.pt" --quiet || exit 1
    fi
    # explicit exits: `set -e` does not reach into a function called from a condition
    local best
    best=$(ls -1 "$dir"/*/best.pt 2>/dev/null | tail -n 1 || true)
    if [ -z "$best" ]; then log "failed $name: no best.pt in $dir"; exit 1; fi
    cp "$best" "$out.part" && mv "$out.part" "$out" || exit 1
    log "done $name"
}

# once OUTPUT COMMAND...: run a command that writes OUTPUT, unless OUTPUT exists.
once() {
    local out=$1; shift
    if [ -e "$out" ]; then return; fi
    log "start $(basename "$out")"
    "$@" || exit 1
    log "done $(basename "$out")"
}

# 1. The tokenizer: 5x5 patches, 10-bit BSQ codes, the encoder taught by k-means prototypes for
#    its first 1,500 steps, an 8-block decoder.
[ -e "$WORK/model/tokenizer.pt" ] || train tokenizer tokenizer --data "$TRAIN" --valid "$VALID" --decoder-blocks 8 --prototypes \
    --teacher-weight 1 --teacher-weight-final 0 --teacher-decay-steps 1500 \
    --entropy-weight 0.01 --entropy-weight-final 0.01 \
    --steps 5200 --batch-size 16 --lr 1e-3 --checkpoint-minutes 10
once "$WORK/model/tokenizer.pt" stkc train compact "$WORK/tokenizer.pt" -o "$WORK/model/tokenizer.pt" --quiet

# 2. The prior: every training frame and its mirror image tokenized, a raster prior, then the
#    group prior (16 steps a tile) started from it, then its int8 arithmetic.
[ -e "$WORK/model/prior.pt" ] || once "$WORK/tokens-valid.pt" stkc tokenize "$VALID" -o "$WORK/tokens-valid.pt" \
    --tokenizer "$WORK/model/tokenizer.pt" --quiet
[ -e "$WORK/model/prior.pt" ] || once "$WORK/tokens-train.pt" stkc tokenize "$TRAIN" --mirrored -o "$WORK/tokens-train.pt" \
    --tokenizer "$WORK/model/tokenizer.pt" --quiet
[ -e "$WORK/model/prior.pt" ] || train prior raster --tokens "$WORK/tokens-train.pt" --valid-tokens "$WORK/tokens-valid.pt" \
    --steps 2400 --batch-size 16 --lr 1.5e-3 --valid-limit 512 --checkpoint-minutes 5
[ -e "$WORK/model/prior.pt" ] || train prior groups --tokens "$WORK/tokens-train.pt" --valid-tokens "$WORK/tokens-valid.pt" \
    --schedule bayer8:1,2,3,4,6,8,12,16,20,24,28,32,40,48,56 --start-from "$WORK/raster.pt" \
    --steps 1500 --batch-size 16 --lr 1.5e-3 --valid-limit 512 --checkpoint-minutes 5
[ -e "$WORK/model/prior.pt" ] || once "$WORK/prior-int8.pt" stkc train int8 "$WORK/groups.pt" --data "$TRAIN" \
    --tokenizer "$WORK/model/tokenizer.pt" -o "$WORK/prior-int8.pt" --quiet
once "$WORK/model/prior.pt" stkc train compact "$WORK/prior-int8.pt" -o "$WORK/model/prior.pt" --quiet

# 3. The enhancement layer: seven levels over the base, Laplace tables, 16 leading channels, the
#    base tokens as context; 3,500 frames, their mirror images and 7,000 augmented ones.
[ -e "$WORK/model/enhancer.pt" ] || train enhancer enhancer --data "$TRAIN" --frames 3500 --mirrored --augmented 7000 \
    --tokenizer "$WORK/model/tokenizer.pt" --pairs-cache "$WORK/pairs.npz" \
    --valid "$VALID" --valid-limit 48 --lambdas "$LAMBDAS" --distribution laplace \
    --leading-channels 16 --base-context --steps 8000 --batch-size 8 --lr 8e-4 \
    --checkpoint-minutes 10
once "$WORK/model/enhancer.pt" stkc train compact "$WORK/enhancer.pt" -o "$WORK/model/enhancer.pt" --quiet
log "model ready: $WORK/model"
