"""The group prior: its schedule, its masks, its exact twin and the range coding of groups."""

import numpy as np
import pytest
import torch

from stkcodec import bitstream, coder
from stkcodec.checkpoint import from_payload, model_payload
from stkcodec.codec import Codec
from stkcodec.coder import decode_grids, encode_grids
from stkcodec.exact import ExactGroupPrior, exact_prior
from stkcodec.prior import GroupPrior, PriorConfig, build_prior
from stkcodec.schedule import BAYER8, MAX_GROUPS, parse_boundaries, plan
from stkcodec.zoo import CodecModel

from .conftest import TINY_PRIOR, make_image, tiny_models

SCHEDULE = "bayer8:1,2,4,8,16,32"


def tiny_group_prior(seed: int = 0, schedule: str = SCHEDULE) -> GroupPrior:
    torch.manual_seed(seed)
    prior = build_prior(PriorConfig(**{**TINY_PRIOR.__dict__, "schedule": schedule}))
    with torch.no_grad():  # far from uniform, so coding is not trivially flat
        prior.head.weight.mul_(50)
    return from_payload(model_payload(prior))  # as a model file loads it


def group_of_each_cell(rows: int, cols: int, schedule: str = SCHEDULE) -> np.ndarray:
    tile = plan(schedule, rows, cols)
    groups = np.empty(rows * cols, dtype=np.int64)
    groups[tile.order] = tile.groups
    return groups


def test_bayer_matrix_ranks_every_cell_once():
    assert sorted(BAYER8.flatten().tolist()) == list(range(64))
    assert BAYER8[0, 0] == 0 and BAYER8[4, 4] == 1  # the second cell is the farthest from the first


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (20, 30), (25, 38)])
def test_plan_orders_every_cell_once_by_group(shape):
    tile = plan(SCHEDULE, *shape)
    assert sorted(tile.order.tolist()) == list(range(shape[0] * shape[1]))
    assert np.all(np.diff(tile.groups) >= 0) and tile.groups[0] == 0
    assert tile.count == tile.groups[-1] + 1 <= MAX_GROUPS
    for group in range(tile.count):
        assert len(tile.members(group)) > 0 and np.all(np.diff(tile.members(group)) > 0)  # raster inside a group


@pytest.mark.parametrize(("schedule", "why"), [
    ("bayer8:2,1", "rise strictly"), ("bayer8:0,4", "rise strictly"), ("bayer8:64", "rise strictly"),
    ("bayer8:x", "integers"), ("zigzag:1", "bayer8"), ("bayer8:" + ",".join(map(str, range(1, 17))), "groups")])
def test_malformed_schedules_are_refused(schedule, why):
    with pytest.raises(ValueError, match=why):
        parse_boundaries(schedule)
    with pytest.raises(ValueError, match=why):
        GroupPrior(PriorConfig(schedule=schedule))


def test_a_schedule_without_boundaries_is_one_group():
    """"bayer8:" is no mistake: every cell in one group, predicted from the start entry alone."""
    assert parse_boundaries("bayer8:") == ()
    assert plan("bayer8:", 4, 5).count == 1 and len(plan("bayer8:", 4, 5).members(0)) == 20


def test_a_groups_predictions_read_only_earlier_groups():
    prior = tiny_group_prior()
    tokens = torch.randint(0, 64, (2, 5, 7))
    groups = group_of_each_cell(5, 7)
    base = prior(tokens)
    for cell in (0, 11, 34):
        changed = tokens.clone().flatten(1)
        changed[:, cell] = (changed[:, cell] + 1) % 64
        moved = (prior(changed.view(2, 5, 7)) - base).abs().amax((0, 2)) > 1e-6  # (35,)
        assert not moved[groups <= groups[cell]].any()
        assert moved[groups > groups[cell]].all()


def test_kv_cache_groups_match_the_full_forward():
    prior = tiny_group_prior()
    tokens = torch.randint(0, 64, (3, 5, 7))
    full = prior(tokens)
    tile = plan(SCHEDULE, 5, 7)
    cache, context = prior.new_cache(), prior._start(3)
    for group in range(tile.count):
        cells = torch.tensor(tile.members(group))
        x = torch.cat([context, prior._queries(cells, 7, 3)], dim=1)
        for layer, block in enumerate(prior.blocks):
            x = block(x, cache, layer, keys=context.shape[1])
        assert (prior.head(prior.norm(x[:, context.shape[1] :])) - full[:, cells]).abs().max() < 1e-4
        context = prior.embed(tokens.flatten(1)[:, cells], cells, 7)


def test_exact_group_steps_equal_the_teacher_forced_pass_bit_for_bit():
    exact = exact_prior(tiny_group_prior())
    assert isinstance(exact, ExactGroupPrior)
    tokens = np.random.default_rng(0).integers(0, 64, (3, 6, 9))
    full = exact.logits(tokens)
    assert np.array_equal(full, np.round(full))  # integers only
    tile = plan(SCHEDULE, 6, 9)
    cache = exact.new_cache(3, 1 + 54)
    flat = tokens.reshape(3, 54)
    for group in range(tile.count):
        before = tile.members(group - 1) if group else None
        step = exact.group_step(flat[:, before] if group else None, before, tile.members(group), 9, cache)
        assert np.array_equal(step, full[:, tile.members(group)])
    for index in range(3):  # and the integers of a grid never depend on the others in its batch
        assert np.array_equal(exact.logits(tokens[index : index + 1])[0], full[index])
    assert np.array_equal(exact.coding_logits(tokens), full)  # what the encoder codes with


def test_exact_group_prior_is_close_to_the_float_one():
    prior = tiny_group_prior()
    tokens = torch.randint(0, 64, (4, 5, 6))
    exact = exact_prior(prior)
    weights = torch.from_numpy(exact.weights(exact.logits(tokens)))
    float_log_p = prior(tokens).double().log_softmax(-1)
    exact_log_p = (weights / weights.sum(-1, keepdim=True)).clamp_min(1e-300).log()
    assert (float_log_p.exp() * (float_log_p - exact_log_p)).sum(-1).mean() < 1e-3  # nats per token


@pytest.mark.parametrize("per_pass", [1, 3, 8])
def test_group_coding_round_trips_every_shape_and_batch(monkeypatch, per_pass):
    monkeypatch.setattr(coder, "ENCODE_BATCH_TILES", per_pass)  # tiles per encoder pass
    exact = exact_prior(tiny_group_prior())
    rng = np.random.default_rng(1)
    grids = [torch.from_numpy(rng.integers(0, 64, shape)) for shape in [(13, 17), (13, 17), (5, 6), (1, 1), (9, 4)]]
    payloads = encode_grids(exact, grids, (6, 8))
    decoded = decode_grids(exact, payloads, [tuple(g.shape) for g in grids], (6, 8))
    assert all(torch.equal(a, b) for a, b in zip(grids, decoded))
    alone = [encode_grids(exact, [grid], (6, 8))[0] for grid in grids]
    assert alone == payloads  # batching never changes the bytes


def test_codec_with_a_group_prior_round_trips_and_differs_from_raster():
    tokenizer, raster = tiny_models()
    group_codec = Codec(CodecModel(tokenizer, tiny_group_prior()))
    images = [make_image(31, 17, seed=s) for s in range(3)] + [make_image(12, 40)]
    files = group_codec.compress_many(images)
    raster_file = Codec(CodecModel(tokenizer, raster)).compress(images[0])
    assert files[0][4:8] != raster_file[4:8]  # another model id
    assert bitstream.parse(files[0])[1] != bitstream.parse(raster_file)[1]  # the same tokens, coded otherwise
    decoded = group_codec.decompress_many(files)
    expected = [group_codec.decompress(f) for f in files]
    assert [d.tobytes() for d in decoded] == [e.tobytes() for e in expected]
    assert [d.size for d in decoded] == [i.size for i in images]


def test_group_sampling_is_reproducible_and_in_range():
    prior = tiny_group_prior()
    rows = []
    first = prior.sample(2, 5, 7, generator=torch.Generator().manual_seed(5), on_row=lambda: rows.append(1))
    second = prior.sample(2, 5, 7, generator=torch.Generator().manual_seed(5))
    assert torch.equal(first, second) and first.shape == (2, 5, 7) and int(first.max()) < 64
    assert len(rows) == 5
