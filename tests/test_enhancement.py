"""Quality levels: the enhancement layer's exact entropy model, the layered bitstream, targets."""

from __future__ import annotations

import dataclasses
import hashlib
import io

import constriction
import numpy as np
import pytest
import torch
from PIL import Image

from stkcodec import bitstream
from stkcodec.codec import Codec
from stkcodec.enhance_exact import ChunkCoder, ExactEnhancerEntropy, chunk_base, coding_tables, exp2, table_scales
from stkcodec.errors import BadInputError
from stkcodec.metrics import psnr_rgb

from .conftest import make_image, tiny_enhancer

# sha256 of the coding tables' float64 bytes: built from exact IEEE operations only, they are the
# same on every machine and every NumPy (a change here changes every enhanced file's bytes)
TABLES_SHA256 = "7504742434245e0612f0a4c79d29411e250c7ebc8d45bd6b20e0ab12f7b4f465"
LAPLACE_TABLES_SHA256 = "ea110b7333638eb41663e483b19426329ce856581f23d7165bc5378ff142856f"


@pytest.fixture(scope="module", params=["anchor tables", "base tokens", "laplace", "leading channels"])
def codec(request, tiny_layered_model, tiny_token_layered_model, tiny_laplace_layered_model,
          tiny_leading_layered_model):
    """Every kind of entropy model: anchors from per-level tables, or from the base tokens,
    Laplace coding tables, and four passes (leading channels first)."""
    return Codec({"anchor tables": tiny_layered_model, "base tokens": tiny_token_layered_model,
                  "laplace": tiny_laplace_layered_model, "leading channels": tiny_leading_layered_model}[request.param])


@pytest.fixture(scope="module")
def frames():
    return [make_image(150, 100, seed=s) for s in range(2)] + [make_image(163, 77, seed=5)]


def test_levels_and_quality_check(codec):
    assert codec.levels == 4
    for bad in (0, 5, -1, 2.5):
        with pytest.raises(BadInputError, match="valid: 1 to 4"):
            codec.compress(make_image(10, 10), quality=bad)


def test_exp2_and_scales_are_exact_constructions():
    values = np.array([-3.75, -1.0, 0.0, 0.5, 2.25, 7.0])
    assert np.allclose(exp2(values), 2.0 ** values, rtol=2**-9)
    assert exp2(np.array([3.0]))[0] == 8.0 and exp2(np.array([-2.0]))[0] == 0.25
    scales = table_scales()
    assert scales[0] == 0.11 and scales[8] == 0.22 and np.all(np.diff(scales) > 0)


def test_coding_tables_are_fixed():
    table, models = coding_tables()
    assert table.shape == (80, 511) and len(models) == 80
    assert np.argmax(table, axis=1).tolist() == [255] * 80  # zero-mean: symbol 0 is the likeliest
    digest = hashlib.sha256(table.tobytes()).hexdigest()
    if TABLES_SHA256 is not None:
        assert digest == TABLES_SHA256


def test_coding_tables_do_not_depend_on_flushing_subnormals():
    """Training flushes subnormals to zero for the whole process (torch.set_flush_denormal): the
    tables built then are the same, bit for bit (they were not, before subnormals became 0)."""
    for distribution in ("gaussian", "laplace"):
        coding_tables.cache_clear()
        plain = coding_tables(distribution)[0]
        if not torch.set_flush_denormal(True):
            pytest.skip("this CPU cannot flush subnormals")
        try:
            coding_tables.cache_clear()
            flushed = coding_tables(distribution)[0]
        finally:
            torch.set_flush_denormal(False)
            coding_tables.cache_clear()
        assert plain.tobytes() == flushed.tobytes()


def test_laplace_tables_are_fixed_and_match_the_float_model():
    """The Laplace tables: peaked at 0, the same bits on every machine, a zero nearly free under
    the smallest (as under the smallest Gaussian), and the float model's
    estimate of each symbol's cost (what training minimises) within 10^-3 bits of theirs, where
    the table's mass past ±255 does not matter."""
    from stkcodec.enhancer import table_laplace_bits

    table, models = coding_tables("laplace")
    assert table.shape == (80, 511) and len(models) == 80
    assert np.argmax(table, axis=1).tolist() == [255] * 80
    assert not np.array_equal(table, coding_tables("gaussian")[0])
    assert -np.log2(table[0, 255] / table[0].sum()) < 1e-6
    digest = hashlib.sha256(table.tobytes()).hexdigest()
    if LAPLACE_TABLES_SHA256 is not None:
        assert digest == LAPLACE_TABLES_SHA256
    probabilities = table / table.sum(1, keepdims=True)
    symbols = torch.arange(-8, 9, dtype=torch.float64)
    for k in (0, 16, 32, 48):
        estimate = table_laplace_bits(symbols, torch.tensor(table_scales()[k], dtype=torch.float64)).numpy()
        assert np.abs(estimate + np.log2(probabilities[k, 255 - 8 : 255 + 9])).max() < 1e-3


def test_laplace_bits_have_finite_gradients_everywhere():
    from stkcodec.enhancer import laplace_bits

    residual = torch.linspace(-4, 4, 81, requires_grad=True)
    scale = torch.full((81,), 0.3, requires_grad=True)
    laplace_bits(residual, scale).sum().backward()
    assert torch.isfinite(residual.grad).all() and torch.isfinite(scale.grad).all()
    assert (residual.grad[:40] < 0).all() and (residual.grad[41:] > 0).all()  # cheaper towards 0


def _chunk_round_trip(entropy, level, latents, tokens=None):
    encoder = constriction.stream.queue.RangeEncoder()
    coder = ChunkCoder(entropy, level, latents.shape, chunk_base(entropy, tokens, latents.shape))
    (symbols, means), = coder.encode([encoder], [latents])
    decoder = constriction.stream.queue.RangeDecoder(encoder.get_compressed())
    (decoded, decoded_means), = coder.decode([decoder])
    return symbols, means, decoded, decoded_means


@pytest.mark.parametrize("level", [0, 2])
@pytest.mark.parametrize("reads_tokens, distribution, leading", [(False, "gaussian", ()), (True, "gaussian", ()),
                                                                 (True, "laplace", ()), (False, "gaussian", (0, 3)),
                                                                 (True, "laplace", (1, 2))])
def test_chunk_symbols_round_trip_exactly(level, reads_tokens, distribution, leading):
    entropy = ExactEnhancerEntropy(tiny_enhancer(tokens=reads_tokens, distribution=distribution, leading=leading))
    rng = np.random.default_rng(level)
    latents = rng.normal(0, 3, (3, 4, 20, 30))
    tokens = rng.integers(0, 64, (1, 3, 20, 30)) if reads_tokens else None
    symbols, means, decoded, decoded_means = _chunk_round_trip(entropy, level, latents, tokens)
    assert np.array_equal(symbols, decoded) and np.array_equal(means, decoded_means)
    assert (symbols != 0).mean() > 0.1  # the test codes something


def test_leading_channels_start_as_the_two_pass_model_and_then_move_the_rest():
    """A model with leading channels that adopts a two-pass one codes the same symbols with the same
    means (its rest networks start at zero), in four passes; once they count, the other channels'
    means move and the leading channels' stay."""
    from stkcodec.enhancer import Enhancer

    two_pass = tiny_enhancer(tokens=True, distribution="laplace")
    adopted = Enhancer(dataclasses.replace(two_pass.config, leading_channels=(1, 2)))
    adopted.adopt(two_pass, [0.002, 0.01, 0.05])
    moved = Enhancer(adopted.config)
    moved.load_state_dict(adopted.state_dict())
    with torch.no_grad():
        for net in (moved.anchor_rest, moved.other_rest):
            net.out.weight.normal_(0, 0.5)
    rng = np.random.default_rng(7)
    latents, tokens = rng.normal(0, 3, (2, 4, 20, 30)), rng.integers(0, 64, (1, 2, 20, 30))
    runs = [_chunk_round_trip(ExactEnhancerEntropy(m), 1, latents, tokens) for m in (two_pass, adopted, moved)]
    assert np.array_equal(runs[0][0], runs[1][0]) and np.array_equal(runs[0][1], runs[1][1])
    anchors = np.add.outer(np.arange(20), np.arange(30)) % 2 == 0
    lead = np.array([False, True, True, False])
    first_pass = anchors[None, None] & lead[None, :, None, None]
    first_pass = np.broadcast_to(first_pass, latents.shape)
    assert np.array_equal(runs[0][1][first_pass], runs[2][1][first_pass])  # pass 1: the anchors' own tables
    assert not np.array_equal(runs[0][1][~first_pass], runs[2][1][~first_pass])
    with torch.no_grad():  # the float model too starts where the two-pass one stood
        x, x0 = torch.rand(2, 3, 100, 150), torch.rand(2, 3, 100, 150)
        level = torch.tensor([0, 2])
        base_tokens = torch.from_numpy(tokens[0])
        for a, b in zip(two_pass(x, x0, level, training=False, tokens=base_tokens),
                        adopted(x, x0, level, training=False, tokens=base_tokens)):
            assert torch.equal(a, b)


def test_leading_channels_are_checked_and_chosen_by_their_bits():
    from stkcodec.enhancer import EnhancerConfig, leading_channels

    for bad in ((2, 1), (1, 1), (0, 1, 2, 3), (4,), (-1,)):
        with pytest.raises(ValueError, match="leading channels"):
            EnhancerConfig(latent_channels=4, leading_channels=bad)
    assert EnhancerConfig(latent_channels=4, leading_channels=[0, 3]).leading_channels == (0, 3)
    assert leading_channels(torch.tensor([5.0, 1.0, 9.0, 2.0]), 2) == (0, 2)
    model = tiny_enhancer(tokens=True)
    x = torch.rand(2, 3, 100, 150)
    bits = model.channel_bits(x, x.flip(-1), torch.zeros(2, 20, 30, dtype=torch.long))
    assert bits.shape == (4,) and (bits >= 0).all() and bits.sum() > 0


def test_the_base_tokens_move_the_anchors():
    """A token-reading model's anchors differ cell by cell, and a stream's depend on its own tokens only."""
    entropy = ExactEnhancerEntropy(tiny_enhancer(tokens=True))
    rng = np.random.default_rng(3)
    tokens = rng.integers(0, 64, (2, 1, 20, 30))
    shape = (1, 4, 20, 30)
    together = ChunkCoder(entropy, 1, shape, chunk_base(entropy, tokens, shape))
    alone = ChunkCoder(entropy, 1, shape, chunk_base(entropy, tokens[1:], shape))
    assert len(np.unique(together.anchor_index[0])) > 4 and len(np.unique(together.anchor_mean[0])) > 100
    assert not np.array_equal(together.anchor_mean[0], together.anchor_mean[1])
    assert np.array_equal(together.anchor_mean[1], alone.anchor_mean[0])
    assert np.array_equal(together.anchor_index[1], alone.anchor_index[0])
    with pytest.raises(ValueError, match="reads the base tokens"):
        chunk_base(entropy, None, shape)
    with pytest.raises(ValueError, match="only"):
        ChunkCoder(entropy, 1, shape)


def test_float_and_exact_anchor_models_agree():
    """The integer twin's anchor means and tables are the float model's, rounded."""
    from stkcodec.enhancer import ANCHOR_RATE, LOG_SCALE_MIN, SCALE_STEPS

    model = tiny_enhancer(tokens=True, context_gain=2.0)
    entropy = ExactEnhancerEntropy(model)
    tokens = np.random.default_rng(4).integers(0, 64, (1, 1, 20, 30))
    shape = (1, 4, 20, 30)
    coder = ChunkCoder(entropy, 2, shape, chunk_base(entropy, tokens, shape))
    with torch.no_grad():
        raw = model.base(torch.from_numpy(tokens[0]))[0]
        gain = model.log_gain[2].exp()[None, :, None, None]
        mean = ANCHOR_RATE * model.anchor_mean[2][None, :, None, None] + raw[:, :4] * gain
        log_scale = ANCHOR_RATE * model.anchor_log_scale[2][None, :, None, None] + raw[:, 4:]
    table = torch.round((log_scale - LOG_SCALE_MIN) * SCALE_STEPS / np.log(2)).clamp(0, 79)
    anchor = np.broadcast_to((np.add.outer(np.arange(20), np.arange(30)) % 2 == 0), (1, 4, 20, 30)).reshape(-1)
    assert np.allclose(coder.anchor_mean[0][anchor] / 4096, mean.numpy().reshape(-1)[anchor], atol=0.01)
    assert np.mean(coder.anchor_index[0][anchor] == table.numpy().reshape(-1)[anchor]) > 0.98


def test_context_integers_do_not_depend_on_batch_or_threads():
    entropy = ExactEnhancerEntropy(tiny_enhancer())
    anchors = np.round(np.random.default_rng(0).normal(0, 3, (4, 4, 20, 30))) * 4096
    anchors[..., (np.add.outer(np.arange(20), np.arange(30)) % 2 == 1)] = 0
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = [entropy.context(anchors[i : i + 1], 1) for i in range(4)]
        torch.set_num_threads(max(2, threads))
        together = entropy.context(anchors, 1)
        tokens = np.random.default_rng(1).integers(0, 64, (4, 20, 30))
        token_entropy = ExactEnhancerEntropy(tiny_enhancer(tokens=True))
        bases_together = token_entropy.base(tokens)
        torch.set_num_threads(1)
        bases_alone = [token_entropy.base(tokens[i : i + 1]) for i in range(4)]
    finally:
        torch.set_num_threads(threads)
    for i, (mean, index) in enumerate(alone):
        assert np.array_equal(mean[0], together[0][i]) and np.array_equal(index[0], together[1][i])
        assert np.all(mean == np.round(mean))
    for i, (anchors_part, hidden_part) in enumerate(bases_alone):
        assert np.array_equal(anchors_part[0], bases_together[0][i]) and np.array_equal(hidden_part[0], bases_together[1][i])


def test_rest_network_integers_do_not_depend_on_batch_or_threads():
    entropy = ExactEnhancerEntropy(tiny_enhancer(leading=(0, 2)))
    decoded = np.round(np.random.default_rng(2).normal(0, 3, (4, 4, 20, 30))) * 4096
    raw = np.round(np.random.default_rng(3).normal(0, 4096, (4, 8, 600)))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = [(entropy.anchor_others(decoded[i : i + 1], 1, None), entropy.other_others(decoded[i : i + 1], 1, raw[i : i + 1]))
                 for i in range(4)]
        torch.set_num_threads(max(2, threads))
        together = entropy.anchor_others(decoded, 1, None), entropy.other_others(decoded, 1, raw)
    finally:
        torch.set_num_threads(threads)
    for i, parts in enumerate(alone):
        for (mean, index), (means, indices) in zip(parts, together):
            assert np.array_equal(mean[0], means[i]) and np.array_equal(index[0], indices[i])


@pytest.mark.parametrize("quality", [1, 2, 3, 4])
def test_every_level_round_trips(codec, frames, quality):
    files = codec.compress_many(frames, quality=quality)
    for image, data in zip(frames, files):
        header, _ = bitstream.parse(data)
        assert header.version == bitstream.VERSION and header.quality == quality and (header.enhancement is None) == (quality == 1)
        decoded = codec.decompress(data)
        assert decoded.size == image.size and decoded.mode == "RGB"
    # batched and alone: the same bytes; the same pixels up to float rounding (formats/stkc.md, Pixels)
    assert codec.compress(frames[0], quality=quality) == files[0]  # frames 0 and 1 share a chunk's passes
    assert codec.compress(frames[2], quality=quality) == files[2]
    for together, data in zip(codec.decompress_many(files), files):
        difference = np.abs(np.asarray(together).astype(int) - np.asarray(codec.decompress(data)).astype(int))
        assert difference.max() <= 1 and (difference > 0).mean() <= 0.01


def test_higher_levels_cost_more_and_change_the_picture(codec, frames):
    sizes = [len(codec.compress(frames[0], quality=q)) for q in range(1, 5)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    base = np.asarray(codec.decompress(codec.compress(frames[0], quality=1)))
    enhanced = np.asarray(codec.decompress(codec.compress(frames[0], quality=4)))
    assert not np.array_equal(base, enhanced)


def test_a_file_cut_after_its_base_is_the_level_1_file(codec, frames):
    for image in frames:
        layered = codec.compress(image, quality=3)
        header, _ = bitstream.parse(layered)
        cut = layered[: header.base_bytes]
        assert cut == codec.compress(image, quality=1)
        assert bitstream.parse(cut)[0].quality == 1
        assert codec.decompress(cut).size == image.size


def test_gray_images_stay_gray_at_every_level(codec):
    gray = make_image(40, 30, seed=2, mode="L")
    for quality in (1, 3):
        decoded = codec.decompress(codec.compress(gray, quality=quality))
        assert decoded.mode == "L" and decoded.size == (40, 30)


def test_targets_pick_levels_per_image(codec, frames):
    files = {q: [len(d) for d in codec.compress_many(frames, quality=q)] for q in range(1, 5)}
    budget = files[3][0]
    chosen = codec.compress_many(frames, target_bytes=budget)
    for k, data in enumerate(chosen):
        level = bitstream.parse(data)[0].quality
        fitting = [q for q in range(1, 5) if files[q][k] <= budget]
        assert level == (max(fitting) if fitting else 1)
    tiny = codec.compress_many(frames, target_bytes=1)  # below the base: the base, not an error
    assert [bitstream.parse(d)[0].quality for d in tiny] == [1] * len(frames)
    psnrs = {q: [psnr_rgb(np.asarray(i), np.asarray(codec.decompress(codec.compress(i, quality=q)).convert("RGB")))
                 for i in frames] for q in range(1, 5)}
    target = psnrs[2][0] + 1e-6
    for k, data in enumerate(codec.compress_many(frames, target_psnr=target)):
        level = bitstream.parse(data)[0].quality
        reaching = [q for q in range(1, 5) if psnrs[q][k] >= target]
        assert level == (min(reaching) if reaching else 4)
    with pytest.raises(BadInputError, match="not both"):
        codec.compress(frames[0], target_bytes=100, target_psnr=30)


def test_damaged_enhancement_is_refused_or_decodes_to_the_original(codec, frames):
    data = codec.compress(frames[0], quality=4)
    original = np.asarray(codec.decompress(data))
    header, _ = bitstream.parse(data)
    start = header.base_bytes
    for offset in range(start, len(data), max(1, (len(data) - start) // 12)):
        for bit in (0, 5):
            damaged = bytearray(data)
            damaged[offset] ^= 1 << bit
            try:
                decoded = codec.decompress(bytes(damaged))
            except BadInputError:
                continue
            assert np.array_equal(np.asarray(decoded), original)


def test_enhancement_segment_validation(codec, frames):
    data = codec.compress(frames[0], quality=2)
    header, _ = bitstream.parse(data)
    with pytest.raises(BadInputError, match="truncated"):
        bitstream.parse(data[:-4])
    with pytest.raises(BadInputError, match="unexpected bytes"):
        bitstream.parse(data + b"\0" * 4)
    wrong_level = bytearray(data)
    wrong_level[header.base_bytes] = 9  # the segment's level (version 4): one the model lacks (and a bad checksum)
    with pytest.raises(BadInputError, match="quality level 9|checksum"):
        codec.decompress(bytes(wrong_level))
    other = codec.compress(frames[1], quality=2)  # another file's segment after this base
    spliced = data[: header.base_bytes] + other[bitstream.parse(other)[0].base_bytes :]
    with pytest.raises(BadInputError, match="checksum|corrupt enhancement payload"):  # whichever comes first
        codec.decompress(spliced)


def test_version_2_files_refuse_trailing_segments(codec, frames):
    import dataclasses

    data = codec.compress(frames[0], quality=2)
    header, payload = bitstream.parse(data)
    as_v2 = dataclasses.replace(header, version=2, enhancement=None)
    with pytest.raises(BadInputError, match="unexpected bytes"):
        bitstream.parse(as_v2.pack() + payload + data[header.base_bytes :])


@pytest.mark.parametrize("reads_tokens, distribution", [(False, "gaussian"), (True, "gaussian"), (True, "laplace")])
def test_float_bits_match_the_coded_bytes(tiny_codec_model, frames, reads_tokens, distribution):
    """The exact entropy model codes within a few percent of the float model's estimate (a tame
    model: under a wild one, symbols far out in a table's tail cost constriction's floor of 24
    bits where the float estimate goes on to 30)."""
    from stkcodec.zoo import CodecModel

    from stkcodec.enhancer import ANCHOR_RATE

    enhancer = tiny_enhancer(seed=1, context_gain=1.0, tokens=reads_tokens, distribution=distribution)
    with torch.no_grad():  # anchors modelled about as wide as their symbols are
        enhancer.anchor_log_scale.fill_(1.0 / ANCHOR_RATE)
    codec = Codec(CodecModel(tiny_codec_model.tokenizer, tiny_codec_model.prior, enhancer))
    image = frames[0]
    base = codec.decompress(codec.compress(image, quality=1))
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255
    x0 = torch.from_numpy(np.array(base)).permute(2, 0, 1)[None].float() / 255
    tokens = codec.tokens_many([codec.compress(image, quality=1)])[0][1] if reads_tokens else None
    for level in range(3):
        with torch.no_grad():
            _, bits = enhancer(x, x0, torch.tensor([level]), training=False,
                               tokens=None if tokens is None else torch.as_tensor(tokens)[None])
        header, _ = bitstream.parse(codec.compress(image, quality=level + 2))
        assert 8 * header.enhancement.payload_bytes == pytest.approx(float(bits), rel=0.03, abs=64)


def test_pillow_saves_and_opens_every_level(codec, frames, monkeypatch):
    import stkcodec.codec as codec_module

    monkeypatch.setattr(codec_module, "default_codec", lambda: codec)
    for quality in (1, 3):
        buffer = io.BytesIO()
        frames[0].save(buffer, "STKC", quality=quality)
        assert bitstream.parse(buffer.getvalue())[0].quality == quality
        buffer.seek(0)
        with Image.open(buffer) as opened:
            assert np.array_equal(np.asarray(opened.convert("RGB")),
                                  np.asarray(codec.decompress(buffer.getvalue())))


def test_adopting_a_trained_model_starts_where_it_stood():
    """`Enhancer.adopt`: a token-reading model with a level more codes the levels it shares with
    the adopted model exactly as that model did (its new layers start at zero), and its new
    level's gain is a step of λ^-1/2 past the last."""
    import dataclasses
    import math

    from stkcodec.enhancer import Enhancer

    trained = tiny_enhancer(seed=2, context_gain=1.0)
    grown = Enhancer(dataclasses.replace(trained.config, levels=4, token_values=64, token_width=4))
    lambdas = [0.002, 0.01, 0.05, 0.2]
    kept = grown.adopt(trained, lambdas)
    assert kept and all(name.split(".")[0] in {"tok_embed", "base_in", "base_mid", "base_out", "base_ctx"}
                        for name in kept)
    assert torch.equal(grown.log_gain[:3], trained.log_gain)
    assert torch.allclose(grown.log_gain[3], trained.log_gain[2] + 0.5 * math.log(4))
    x = torch.from_numpy(np.array(make_image(150, 100, seed=8))).permute(2, 0, 1)[None].float() / 255
    x0 = (x * 8).round() / 8
    tokens = torch.randint(0, 64, (1, 20, 30))
    with torch.no_grad():
        for level in range(3):
            before = trained(x, x0, torch.tensor([level]), training=False)
            after = grown.eval()(x, x0, torch.tensor([level]), training=False, tokens=tokens)
            assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])


def test_adopted_blocks_start_as_the_identity():
    """A model with more residual blocks in E and D than the model it adopts starts where that
    model stood: the same latents, bits and pixels."""
    import dataclasses

    from stkcodec.enhancer import Enhancer

    trained = tiny_enhancer(seed=4, context_gain=1.0)
    deeper = Enhancer(dataclasses.replace(trained.config, encoder_blocks=3, decoder_blocks=2))
    kept = deeper.adopt(trained, [0.002, 0.01, 0.05])
    assert kept and all(name.startswith(("enc_blocks.1.", "enc_blocks.2.", "dec_blocks.1.")) for name in kept)
    x = torch.from_numpy(np.array(make_image(150, 100, seed=9))).permute(2, 0, 1)[None].float() / 255
    x0 = (x * 8).round() / 8
    with torch.no_grad():
        assert torch.equal(deeper.eval().encode(x, x0), trained.encode(x, x0))
        for level in range(3):
            before = trained(x, x0, torch.tensor([level]), training=False)
            after = deeper(x, x0, torch.tensor([level]), training=False)
            assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])


def test_a_laplace_model_adopting_a_gaussian_one_codes_the_same_symbols():
    """`adopt` from a Gaussian model into a Laplace one: the same latents, symbols and pixels
    (means do not move), every log scale moved by LAPLACE_SHIFT, and the bits estimated under
    Laplace tables."""
    import dataclasses

    from stkcodec.enhancer import ANCHOR_RATE, LAPLACE_SHIFT, Enhancer

    trained = tiny_enhancer(seed=5, context_gain=1.0)
    laplace = Enhancer(dataclasses.replace(trained.config, distribution="laplace"))
    assert laplace.adopt(trained, [0.002, 0.01, 0.05]) == []
    assert torch.allclose(laplace.anchor_log_scale, trained.anchor_log_scale + LAPLACE_SHIFT / ANCHOR_RATE)
    x = torch.from_numpy(np.array(make_image(150, 100, seed=3))).permute(2, 0, 1)[None].float() / 255
    x0 = (x * 8).round() / 8
    with torch.no_grad():
        before = trained(x, x0, torch.tensor([1]), training=False)
        after = laplace.eval()(x, x0, torch.tensor([1]), training=False)
    assert torch.equal(before[0], after[0]) and not torch.equal(before[1], after[1])
    with pytest.raises(ValueError, match="adopting a laplace model"):
        Enhancer(trained.config).adopt(laplace, [0.002, 0.01, 0.05])


def test_an_unknown_distribution_is_refused():
    from stkcodec.enhancer import EnhancerConfig

    with pytest.raises(ValueError, match="one of gaussian, laplace"):
        EnhancerConfig(distribution="cauchy")
