import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from stkcodec.checkpoint import load_model, read_checkpoint
from stkcodec.cli import main

TINY = ["--encoder-channels", "8", "--encoder-blocks", "1", "--decoder-channels", "8", "--decoder-blocks", "1", "--bits", "6"]


def run(args, **kwargs):
    result = CliRunner().invoke(main, args, catch_exceptions=False, **kwargs)
    return result


def test_train_tokenizer_writes_model_metrics_and_checkpoint(tmp_path, frames_dir):
    out = tmp_path / "tok.pt"
    result = run(["--quiet", "train", "tokenizer", "--data", frames_dir, "--valid", frames_dir, "--steps", "6",
                  "--batch-size", "2", "-o", str(out), "--checkpoint-dir", str(tmp_path / "ck"), *TINY])
    assert result.exit_code == 0, result.output
    model = load_model(out, kind="tokenizer")
    assert model.codebook_size == 64
    payload = read_checkpoint(out)
    assert payload["step"] == 6 and "valid_psnr_db" in payload["metrics"]
    assert payload["provenance"]["train"]["images"] == 9
    run_dir, = (tmp_path / "ck").iterdir()
    state = read_checkpoint(run_dir / "checkpoint.pt")
    assert {"optimizer", "rng", "elapsed_s"} <= set(state)
    best = read_checkpoint(run_dir / "best.pt")  # the best validation so far, as a model file
    assert "valid_psnr_db" in best["metrics"] and "optimizer" not in best
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["split"] == "valid"


def test_resume_continues_exactly_where_it_stopped(tmp_path, frames_dir):
    # Within the warm-up the learning rate depends on the step alone, so a 4-step run resumed
    # to 8 steps must give the very weights of an unbroken 8-step run.
    common = ["--quiet", "train", "tokenizer", "--data", frames_dir, "--batch-size", "2", *TINY, "--seed", "3"]
    run([*common, "--steps", "8", "-o", str(tmp_path / "straight.pt"), "--checkpoint-dir", str(tmp_path / "a")])
    run([*common, "--steps", "4", "-o", str(tmp_path / "half.pt"), "--checkpoint-dir", str(tmp_path / "b")])
    checkpoint, = (tmp_path / "b").glob("*/checkpoint.pt")
    assert read_checkpoint(checkpoint)["step"] == 4
    result = run([*common, "--steps", "8", "--resume", str(checkpoint), "-o", str(tmp_path / "resumed.pt")])
    assert result.exit_code == 0
    resumed, straight = read_checkpoint(tmp_path / "resumed.pt"), read_checkpoint(tmp_path / "straight.pt")
    assert resumed["step"] == 8
    assert resumed["model_id"] == straight["model_id"]


def test_resume_alone_takes_data_duration_and_options_from_the_checkpoint(tmp_path, frames_dir):
    run(["--quiet", "train", "tokenizer", "--data", frames_dir, "--valid", frames_dir, "--batch-size", "3", *TINY,
         "--steps", "4", "--seed", "5", "-o", str(tmp_path / "a.pt"), "--checkpoint-dir", str(tmp_path / "ck")])
    checkpoint, = (tmp_path / "ck").glob("*/checkpoint.pt")
    (tmp_path / "a.pt").unlink()
    result = run(["--quiet", "train", "tokenizer", "--resume", str(checkpoint)])  # nothing else
    assert result.exit_code == 0, result.output
    payload = read_checkpoint(tmp_path / "a.pt")  # the first run's output, its 4 steps: nothing left to do
    assert payload["step"] == 4 and payload["provenance"]["recipe"]["run"]["batch_size"] == 3
    result = run(["--quiet", "train", "tokenizer", "--resume", str(checkpoint), "--steps", "6", "--force"])
    assert result.exit_code == 0, result.output
    payload = read_checkpoint(tmp_path / "a.pt")
    assert payload["step"] == 6 and payload["provenance"]["train"]["folder"] == os.path.abspath(frames_dir)
    assert "valid_psnr_db" in payload["metrics"] and payload["provenance"]["recipe"]["run"]["seed"] == 5
    assert list((tmp_path / "ck").iterdir()) == [checkpoint.parent]  # the same run folder...
    steps = [json.loads(line)["step"] for line in (checkpoint.parent / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 6  # ...and the same metrics.jsonl, in order


def test_resume_with_another_config_is_refused(tmp_path, frames_dir):
    common = ["train", "tokenizer", "--data", frames_dir, "--batch-size", "2", "--steps", "2", *TINY]
    run(["--quiet", *common, "-o", str(tmp_path / "a.pt"), "--checkpoint-dir", str(tmp_path / "a")])
    result = CliRunner().invoke(main, [*common, "--bits", "7", "--resume", str(tmp_path / "a.pt"),
                                       "-o", str(tmp_path / "b.pt"), "--checkpoint-dir", str(tmp_path / "b")])
    assert result.exit_code == 3 and "config differs" in result.output and "(bits)" in result.output


def test_bad_data_folder_is_a_clean_error(tmp_path):
    result = CliRunner().invoke(main, ["train", "tokenizer", "--data", str(tmp_path / "nope"), "--steps", "1"])
    assert result.exit_code == 2 and "not a folder of images" in result.output


@pytest.mark.slow
def test_two_process_ddp_on_cpu(tmp_path, frames_dir):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "STKC_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
               "-m", "stkcodec", "--quiet", "train", "tokenizer", "--data", frames_dir, "--steps", "3",
               "--batch-size", "2", "-o", str(tmp_path / "ddp.pt"), "--checkpoint-dir", str(tmp_path / "ck"), *TINY]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    payload = read_checkpoint(tmp_path / "ddp.pt")
    assert payload["step"] == 3
    assert len(list(Path(tmp_path / "ck").glob("*/checkpoint.pt"))) == 1  # only rank 0 writes


def test_resume_may_change_loss_weights_only(tmp_path, frames_dir):
    common = ["train", "tokenizer", "--data", frames_dir, "--batch-size", "2", *TINY]
    run(["--quiet", *common, "--steps", "2", "-o", str(tmp_path / "a.pt"), "--checkpoint-dir", str(tmp_path / "a")])
    result = CliRunner().invoke(main, [*common, "--steps", "3", "--entropy-weight", "0.05", "--resume",
                                       str(tmp_path / "a.pt"), "-o", str(tmp_path / "b.pt"),
                                       "--checkpoint-dir", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert "entropy_weight 0.01 -> 0.05" in result.output
    payload = read_checkpoint(tmp_path / "b.pt")
    assert payload["provenance"]["recipe"]["loss"]["entropy_weight"] == 0.05
    assert payload["config"] == read_checkpoint(tmp_path / "a.pt")["config"]  # the id hashes the shape alone


def test_decoder_only_keeps_tokens_and_the_prior_trained_on_them(tmp_path, frames_dir):
    import torch

    from stkcodec.checkpoint import from_payload, model_classes, model_payload
    from stkcodec.data import ImageFolder
    from stkcodec.prior import PriorConfig
    from stkcodec.zoo import CodecModel

    common = ["train", "tokenizer", "--data", frames_dir, "--batch-size", "2", *TINY]
    run(["--quiet", *common, "--steps", "3", "-o", str(tmp_path / "a.pt"), "--checkpoint-dir", str(tmp_path / "a")])
    result = run(["--quiet", *common, "--steps", "8", "--decoder-only", "--resume", str(tmp_path / "a.pt"),
                  "-o", str(tmp_path / "b.pt"), "--checkpoint-dir", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    before, after = load_model(tmp_path / "a.pt", kind="tokenizer"), load_model(tmp_path / "b.pt", kind="tokenizer")
    changed = {name for name, value in before.state_dict().items() if not torch.equal(value, after.state_dict()[name])}
    assert changed and all(name.split(".")[0] in {"from_latent", "decoder", "to_pixels"} for name in changed)
    images = next(iter(ImageFolder(frames_dir).batches(9)))
    assert torch.equal(before.encode_index(images), after.encode_index(images))
    assert after.provenance["same_encoder_as"] == [before.model_id]
    prior = model_classes("prior")[0](PriorConfig(vocab_size=64, d_model=16, n_layers=1, n_heads=2))
    prior = from_payload(model_payload(prior, provenance={"train": {"tokenizer_id": before.model_id}}))
    CodecModel(after, prior)  # accepted: the prior learned the tokens this decoder reads


def test_decoder_only_needs_resume(frames_dir):
    result = CliRunner().invoke(main, ["train", "tokenizer", "--data", frames_dir, "--steps", "1", "--decoder-only"])
    assert result.exit_code == 2 and "--resume" in result.output


def train_on_kept_encoder(tmp_path, frames_dir, common, decoder_args):
    """Train a.pt, then b.pt on a.pt's encoder with `decoder_args`; check that b makes a's tokens
    and says so. Returns (a, b)."""
    import torch

    from stkcodec.data import ImageFolder

    run(["--quiet", *common, *TINY, "-o", str(tmp_path / "a.pt"), "--checkpoint-dir", str(tmp_path / "a")])
    result = run(["--quiet", *common, *decoder_args, "--encoder-from", str(tmp_path / "a.pt"),
                  "-o", str(tmp_path / "b.pt"), "--checkpoint-dir", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    before, after = load_model(tmp_path / "a.pt", kind="tokenizer"), load_model(tmp_path / "b.pt", kind="tokenizer")
    images = next(iter(ImageFolder(frames_dir).batches(9)))
    assert torch.equal(before.encode_index(images), after.encode_index(images))
    assert after.provenance["same_encoder_as"] == [before.model_id]
    return before, after


def test_encoder_from_trains_a_new_decoder_for_the_same_tokens(tmp_path, frames_dir):
    common = ["train", "tokenizer", "--data", frames_dir, "--batch-size", "2", "--steps", "3"]
    bigger = [*TINY[:4], "--decoder-channels", "12", "--decoder-blocks", "2", "--bits", "6"]
    _, after = train_on_kept_encoder(tmp_path, frames_dir, common, bigger)
    assert after.config.decoder_blocks == 2
    other = run([*common, *TINY[:4], "--decoder-channels", "8", "--decoder-blocks", "1", "--bits", "7",
                 "--encoder-from", str(tmp_path / "a.pt"), "-o", str(tmp_path / "c.pt")])
    assert other.exit_code == 3 and "bits" in other.output


def test_decoder_from_grows_a_deeper_decoder_for_the_same_tokens(tmp_path, frames_dir):
    common = ["train", "tokenizer", "--data", frames_dir, "--batch-size", "2", "--steps", "3"]
    deeper = [*TINY[:6], "--decoder-blocks", "3", "--bits", "6", "--decoder-from", str(tmp_path / "a.pt")]
    _, after = train_on_kept_encoder(tmp_path, frames_dir, common, deeper)
    assert after.config.decoder_blocks == 3
    wider = run([*common, *TINY[:4], "--decoder-channels", "12", "--decoder-blocks", "2", "--bits", "6",
                 "--decoder-from", str(tmp_path / "a.pt"), "-o", str(tmp_path / "c.pt")])
    assert wider.exit_code == 3 and "decoder_channels" in wider.output


def test_outputs_are_checked_before_training_and_defaults_shown(tmp_path, frames_dir):
    runner = CliRunner()
    tokens = tmp_path / "tokens.pt"
    from stkcodec.checkpoint import save_model

    from .conftest import tiny_models

    save_model(tiny_models()[0], tmp_path / "tok.pt")
    assert runner.invoke(main, ["--quiet", "tokenize", frames_dir, "--tokenizer", str(tmp_path / "tok.pt"),
                                "-o", str(tokens)]).exit_code == 0
    existing = tmp_path / "prior.pt"
    existing.write_bytes(b"someone's model")
    common = ["train", "prior", "--tokens", str(tokens), "--steps", "1", "--d-model", "16", "--layers", "1",
              "--heads", "2", "--checkpoint-dir", str(tmp_path / "ck")]
    result = runner.invoke(main, [*common, "-o", str(existing)])
    assert result.exit_code == 4 and "exists (use --force" in result.output
    assert existing.read_bytes() == b"someone's model" and not (tmp_path / "ck").exists()  # nothing trained
    assert runner.invoke(main, ["--quiet", *common, "-o", str(existing), "--force"]).exit_code == 0
    assert read_checkpoint(existing)["kind"] == "prior"
    unwritable = runner.invoke(main, ["train", "tokenizer", "--data", frames_dir, "--steps", "1", *TINY,
                                      "-o", "/proc/stkc-test/tok.pt", "--checkpoint-dir", str(tmp_path / "ck2")])
    assert unwritable.exit_code == 4 and unwritable.output.startswith("Error: cannot write /proc/stkc-test/tok.pt")
    assert len(unwritable.output.strip().splitlines()) == 1 and not (tmp_path / "ck2").exists()
    for command, output in [("tokenizer", "tokenizer.pt"), ("prior", "prior.pt")]:
        text = " ".join(runner.invoke(main, ["train", command, "-h"]).output.split())  # help wraps lines
        assert f"[default: {output}]" in text


def test_a_signal_saves_a_checkpoint_that_resume_alone_continues(tmp_path, frames_dir, monkeypatch):
    from stkcodec.data import ImageFolder

    sample, calls = ImageFolder.sample, []

    def sample_then_signal(self, *args, **kwargs):  # SIGTERM arrives during the 4th step, as from `kill`
        calls.append(1)
        if len(calls) == 4:
            os.kill(os.getpid(), signal.SIGTERM)
        return sample(self, *args, **kwargs)

    monkeypatch.setattr(ImageFolder, "sample", sample_then_signal)
    out = tmp_path / "tok.pt"
    result = CliRunner().invoke(main, ["train", "tokenizer", "--data", frames_dir, "--minutes", "30", "--batch-size",
                                       "2", *TINY, "--no-prototypes", "--teacher-weight", "0",  # no k-means
                                       "-o", str(out), "--checkpoint-dir", str(tmp_path / "ck")])
    checkpoint, = (tmp_path / "ck").glob("*/checkpoint.pt")
    assert result.exit_code == 130 and f"interrupted at step 4: checkpoint {checkpoint}" in result.output
    assert read_checkpoint(checkpoint)["step"] == 4 and not out.exists()
    monkeypatch.setattr(ImageFolder, "sample", sample)
    result = run(["--quiet", "train", "tokenizer", "--resume", str(checkpoint), "--steps", "6"])
    assert result.exit_code == 0, result.output
    payload = read_checkpoint(out)  # the interrupted run's output, data and minutes
    assert payload["step"] == 6 and payload["provenance"]["recipe"]["run"]["minutes"] == 30
    lines = [json.loads(line) for line in (checkpoint.parent / "metrics.jsonl").read_text().splitlines()]
    assert [(line["split"], line["step"]) for line in lines] == [("interrupted", 4), ("valid", 6)]  # one file


def test_progress_shows_elapsed_and_remaining_time_and_kmeans(tmp_path, frames_dir):
    from stkcodec.train import TrainConfig, progress_note

    assert progress_note(120, 37.2, TrainConfig(minutes=5)) == "step 120, 0:37 elapsed, 4:23 left"
    assert progress_note(120, 3700, TrainConfig(minutes=120)) == "step 120, 1:01:40 elapsed, 58:20 left"
    assert progress_note(7, 1.0, TrainConfig(steps=10)) == "step 7"
    result = run(["train", "tokenizer", "--data", frames_dir, "--minutes", "0.02", "--batch-size", "2", *TINY,
                  "-o", str(tmp_path / "t.pt"), "--checkpoint-dir", str(tmp_path / "ck")])
    assert result.exit_code == 0, result.output
    assert "k-means" in result.output and "elapsed" in result.output and "left" in result.output


def test_an_unreadable_training_image_is_skipped_and_counted_unless_strict(tmp_path, frames_dir):
    (Path(frames_dir) / "broken.png").write_bytes(b"not a PNG at all")
    common = ["train", "tokenizer", "--data", frames_dir, "--steps", "2", "--batch-size", "2", *TINY,
              "--checkpoint-dir", str(tmp_path / "ck")]
    result = run([*common, "-o", str(tmp_path / "t.pt")])
    assert result.exit_code == 0, result.output
    assert "warning: " in result.output and "broken.png" in result.output
    provenance = read_checkpoint(tmp_path / "t.pt")["provenance"]["train"]
    assert provenance["images"] == 9 and provenance["skipped"] == 1
    strict = CliRunner().invoke(main, [*common, "--strict-data", "-o", str(tmp_path / "s.pt")])
    assert strict.exit_code == 2 and "broken.png" in strict.output and not (tmp_path / "s.pt").exists()


def test_weight_decay_spares_gains_and_biases():
    from stkcodec.prior import Prior, PriorConfig
    from stkcodec.train import TrainConfig, make_optimizer

    model = Prior(PriorConfig(vocab_size=16, d_model=16, n_layers=1, n_heads=2))
    optimizer = make_optimizer(list(model.parameters()), TrainConfig(steps=1, weight_decay=0.1))
    decays = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    for name, parameter in model.named_parameters():
        assert decays[id(parameter)] == (0.1 if parameter.dim() >= 2 else 0.0), name
    assert any(p.dim() < 2 for p in model.parameters())  # RMSNorm gains: the case that matters


def test_train_enhancer_runs_resumes_and_makes_a_model_with_levels(tmp_path, frames_dir, tiny_model_dir):
    from stkcodec.codec import Codec

    from .conftest import make_image

    tokenizer = str(Path(tiny_model_dir) / "tokenizer.pt")
    common = ["train", "enhancer", "--data", frames_dir, "--tokenizer", tokenizer, "--batch-size", "2",
              "--latent-channels", "4", "--width", "8", "--context-width", "8", "--lambdas", "0.001,0.01",
              "--checkpoint-dir", str(tmp_path / "ck"), "--quiet"]
    result = run([*common, "--steps", "2", "--pairs-cache", str(tmp_path / "pairs.npz"), "-o", str(tmp_path / "e.pt")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "pairs.npz").exists()
    resumed = run(["train", "enhancer", "--resume", str(tmp_path / "e.pt"), "--steps", "4", "--quiet",
                   "--checkpoint-dir", str(tmp_path / "ck"), "-o", str(tmp_path / "e2.pt")])
    assert resumed.exit_code == 0, resumed.output
    assert read_checkpoint(tmp_path / "e2.pt")["step"] == 4
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("tokenizer.pt", "prior.pt"):
        (folder / name).write_bytes((Path(tiny_model_dir) / name).read_bytes())
    (folder / "enhancer.pt").write_bytes((tmp_path / "e2.pt").read_bytes())
    codec = Codec(str(folder))
    assert codec.levels == 3
    image = make_image(150, 100, seed=4)
    assert codec.decompress(codec.compress(image, quality=3)).size == image.size


def test_train_enhancer_starts_from_a_trained_one_with_more_levels(tmp_path, frames_dir, tiny_model_dir):
    tokenizer = str(Path(tiny_model_dir) / "tokenizer.pt")
    common = ["train", "enhancer", "--data", frames_dir, "--frames", "3", "--no-mirrored", "--tokenizer", tokenizer,
              "--batch-size", "2", "--latent-channels", "4", "--width", "8", "--context-width", "8",
              "--checkpoint-dir", str(tmp_path / "ck"), "--steps", "2"]
    first = run([*common, "--no-base-context", "--lambdas", "0.001,0.01", "--quiet", "-o", str(tmp_path / "a.pt")])
    assert first.exit_code == 0, first.output
    assert read_checkpoint(tmp_path / "a.pt")["config"]["token_values"] == 0
    grown = run([*common, "--lambdas", "0.001,0.01,0.05", "--start-from", str(tmp_path / "a.pt"), "-o",
                 str(tmp_path / "b.pt")])
    assert grown.exit_code == 0, grown.output
    assert "starting from" in grown.output and "tok_embed.weight" in grown.output
    payload = read_checkpoint(tmp_path / "b.pt")
    assert payload["config"]["token_values"] == 64 and payload["config"]["levels"] == 3
    assert payload["provenance"]["started_from"]["model_id"] == read_checkpoint(tmp_path / "a.pt")["model_id"]
    both = run([*common, "--start-from", str(tmp_path / "a.pt"), "--resume", str(tmp_path / "b.pt"), "-o",
                str(tmp_path / "c.pt")])
    assert both.exit_code == 2 and "give one of them" in both.output
    laplace = run([*common, "--lambdas", "0.001,0.01,0.05", "--distribution", "laplace", "--start-from",
                   str(tmp_path / "b.pt"), "--quiet", "-o", str(tmp_path / "l.pt")])
    assert laplace.exit_code == 0, laplace.output
    assert read_checkpoint(tmp_path / "l.pt")["config"]["distribution"] == "laplace"
    assert read_checkpoint(tmp_path / "b.pt")["config"]["distribution"] == "gaussian"
    back = run([*common, "--lambdas", "0.001,0.01,0.05", "--start-from", str(tmp_path / "l.pt"), "-o",
                str(tmp_path / "g.pt")])
    assert back.exit_code == 2 and "give --distribution laplace" in back.output
    assert not (tmp_path / "g.pt").exists()
    four = run([*common, "--lambdas", "0.001,0.01,0.05", "--distribution", "laplace", "--start-from",
                str(tmp_path / "l.pt"), "--leading-channels", "2", "--keep-transforms", "-o", str(tmp_path / "f.pt")])
    assert four.exit_code == 0, four.output
    assert "leading channels: " in four.output
    started, made = read_checkpoint(tmp_path / "l.pt"), read_checkpoint(tmp_path / "f.pt")
    assert len(made["config"]["leading_channels"]) == 2 and made["provenance"]["started_from"]["kept_transforms"]
    from stkcodec.enhancer import TRANSFORMS

    for name, tensor in made["state_dict"].items():
        if name.startswith(TRANSFORMS):  # E and D kept, bit for bit
            assert torch.equal(tensor, started["state_dict"][name]), name
    assert not torch.equal(made["state_dict"]["ctx_out.weight"], started["state_dict"]["ctx_out.weight"])
    for bad, message in ((["--leading-channels", "4"], "at most 3"), (["--keep-transforms"], "give it")):
        refused = run([*common, "--lambdas", "0.001,0.01,0.05", *bad, "-o", str(tmp_path / "x.pt")])
        assert refused.exit_code == 2 and message in refused.output, refused.output


def test_colour_augment_is_seeded_keeps_the_shape_and_changes_the_look():
    from stkcodec.data import ColourAugment

    from .conftest import make_image

    frame = np.asarray(make_image(150, 100, seed=2))
    first, second = ColourAugment(seed=5), ColourAugment(seed=5)
    looks = [first(frame) for _ in range(6)]
    assert all(np.array_equal(a, second(frame)) for a in looks)  # the same seed, the same pairs
    assert all(look.shape == frame.shape and look.dtype == np.uint8 for look in looks)
    assert all(not np.array_equal(look, frame) for look in looks)
    assert len({look.tobytes() for look in looks}) == 6
    grey = np.full((100, 150, 3), 128, dtype=np.uint8)
    assert all(np.ptp(look.astype(int), axis=2).max() <= 1 for look in (ColourAugment(seed=s)(grey) for s in range(8)))


def test_train_enhancer_augmented_pairs_and_a_cache_that_does_not_fit(tmp_path, frames_dir, tiny_model_dir):
    from stkcodec.data import BasePairs

    tokenizer = str(Path(tiny_model_dir) / "tokenizer.pt")
    common = ["train", "enhancer", "--data", frames_dir, "--frames", "3", "--tokenizer", tokenizer,
              "--batch-size", "2", "--latent-channels", "4", "--width", "8", "--context-width", "8",
              "--lambdas", "0.001,0.01", "--checkpoint-dir", str(tmp_path / "ck"), "--steps", "1", "--quiet"]
    cache = tmp_path / "pairs.npz"
    made = run([*common, "--augmented", "4", "--pairs-cache", str(cache), "-o", str(tmp_path / "a.pt")])
    assert made.exit_code == 0, made.output
    pairs = BasePairs.load(cache)
    assert len(pairs) == 3 * 2 + 4  # the frames, mirrored, then the augmented ones
    assert read_checkpoint(tmp_path / "a.pt")["provenance"]["train"]["augmented"] == 4
    again = run([*common, "--augmented", "2", "--pairs-cache", str(cache), "-o", str(tmp_path / "b.pt")])
    assert again.exit_code == 2 and "holds 10 pairs" in again.output and "ask for 8" in again.output
    too_many = run([*common, "--augmented", "50", "-o", str(tmp_path / "c.pt")])
    assert too_many.exit_code != 0 and "50 augmented frames asked of 9" in too_many.output
    assert "Traceback" not in too_many.output
