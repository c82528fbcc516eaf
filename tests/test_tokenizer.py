import dataclasses

import pytest
import torch

from stkcodec.bsq import BSQ
from stkcodec.checkpoint import load_model, save_model
from stkcodec.finetune import keep_encoder_of, start_decoder_from
from stkcodec.objectives import TokenizerLoss, TokenizerObjective
from stkcodec.tokenizer import Tokenizer, TokenizerConfig

from .conftest import TINY_TOKENIZER, tiny_enhancer, tiny_models


@pytest.mark.parametrize("bits", [1, 6, 10, 16])
def test_index_code_index_is_identity(bits):
    bsq = BSQ(bits=bits)
    index = torch.arange(2**bits) if bits <= 10 else torch.randint(0, 2**bits, (5000,))
    codes = bsq.index_to_codes(index)
    assert torch.allclose(codes.norm(dim=-1), torch.ones(len(index)))
    assert torch.equal(bsq.codes_to_index(codes), index)


def test_quantize_gives_sphere_corners_and_straight_through_gradient():
    bsq = BSQ(bits=10)
    latents = torch.randn(4, 7, 10, requires_grad=True)
    codes, losses = bsq(latents)
    assert torch.allclose(codes.abs(), torch.full_like(codes, 10**-0.5))
    codes.sum().backward()
    assert latents.grad is not None and latents.grad.abs().sum() > 0
    assert {"commitment", "entropy"} <= set(losses)


@pytest.mark.parametrize("height,width", [(1, 1), (7, 13), (101, 151), (100, 150)])
def test_odd_sizes_give_right_shapes(height, width):
    tokenizer, _ = tiny_models()
    images = torch.rand(2, 3, height, width)
    tokens = tokenizer.encode_index(images)
    assert tokens.shape == (2, -(-height // 5), -(-width // 5)) and tokens.dtype == torch.int64
    assert tokens.min() >= 0 and tokens.max() < tokenizer.codebook_size
    decoded = tokenizer.decode_index(tokens, size=(height, width))
    assert decoded.shape == (2, 3, height, width)
    assert decoded.min() >= 0 and decoded.max() <= 1


def test_tiny_model_loss_falls():
    torch.manual_seed(0)
    tokenizer = Tokenizer(TINY_TOKENIZER)
    objective = TokenizerObjective(TokenizerLoss(entropy_weight=0.02, teacher_weight=0.0))
    optimizer = torch.optim.Adam(tokenizer.parameters(), lr=3e-3)
    images = torch.rand(8, 3, 20, 30) * 0.3 + torch.linspace(0, 0.6, 30)
    losses = []
    for _ in range(30):
        loss, _ = objective.loss(tokenizer, images)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5


def test_save_load_gives_identical_outputs(tmp_path):
    tokenizer, _ = tiny_models()
    path = tmp_path / "tokenizer.pt"
    save_model(tokenizer, path)
    loaded = load_model(path, kind="tokenizer")
    images = torch.rand(2, 3, 100, 150)
    assert loaded.model_id == tokenizer.model_id
    assert torch.equal(loaded.encode_index(images), tokenizer.encode_index(images))
    tokens = tokenizer.encode_index(images)
    assert torch.equal(loaded.decode_index(tokens), tokenizer.decode_index(tokens))


def test_config_is_frozen_and_keyword_only():
    with pytest.raises(TypeError, match="positional"):
        TokenizerConfig(5)  # type: ignore[misc]
    config = TokenizerConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.bits = 3  # type: ignore[misc]


def test_the_config_is_the_shape_alone_and_its_defaults_the_shipped_recipe():
    from stkcodec.zoo import CodecModel

    shipped = CodecModel.load("default").tokenizer.config
    assert dataclasses.replace(shipped, decoder_blocks=TokenizerConfig().decoder_blocks) == TokenizerConfig()
    assert not {"commitment_weight", "entropy_weight", "teacher_weight"} & {f.name for f in dataclasses.fields(TokenizerConfig)}
    assert TokenizerLoss() == TokenizerLoss(commitment_weight=0.25, entropy_weight=0.01, entropy_weight_final=0.01,
                                            entropy_decay_steps=600, teacher_weight=1.0, teacher_weight_final=0.0,
                                            teacher_decay_steps=1500)  # the README's recipe


def test_shipped_files_of_the_old_layout_load_and_keep_their_ids():
    from stkcodec.checkpoint import compute_model_id, from_payload, read_checkpoint
    from stkcodec.modelfile import split_config
    from stkcodec.zoo import models_dir

    for name, had_prototypes in [("p5-10bit", False), ("p5-10bit-deep", True)]:
        payload = read_checkpoint(models_dir() / name / "tokenizer.pt")
        assert "entropy_weight" in payload["config"]  # written before the recipe left the config
        model = from_payload(payload)
        # a decode-only file (p5-10bit's: its encoder left out) checks the hash of what it stores
        stored_id = payload["retired"]["kept_id"] if "retired" in payload else payload["model_id"]
        assert model.model_id == payload["model_id"] and stored_id == compute_model_id(payload["config"],
                                                                                        payload["state_dict"])
        assert model.config.prototypes is had_prototypes and model.provenance == payload["provenance"]
        _, recipe = split_config("tokenizer", payload["config"])
        assert recipe["entropy_weight_final"] == 0.01  # what a resumed run takes as its loss settings


def test_a_model_file_names_its_own_kind():
    from stkcodec.checkpoint import from_payload, model_payload
    from stkcodec.errors import ModelMismatchError

    _, prior = tiny_models()
    with pytest.raises(ModelMismatchError, match="is a 'prior' model, expected a 'tokenizer'"):
        from_payload(model_payload(prior), kind="tokenizer")


def test_a_model_loads_every_weight_from_its_file_and_building_still_initialises():
    """Loading skips the random initialisation (checkpoint.initialisers_skipped), so every weight
    must come from the file; building a network outside loading initialises it as before."""
    from torch import nn

    from stkcodec.checkpoint import from_payload, model_payload
    from stkcodec.errors import BadInputError

    tokenizer, prior = tiny_models()
    for model in (tokenizer, prior, tiny_enhancer()):
        loaded = from_payload(model_payload(model))
        own, theirs = model.state_dict(), loaded.state_dict()
        assert own.keys() == theirs.keys() and all(torch.equal(own[k], theirs[k]) for k in own)
    weight = nn.Linear(64, 64).weight  # torch's initialisers are back after loading
    assert weight.abs().max() > 0 and weight.std() > 0.01
    with pytest.raises(BadInputError, match="weights do not fit"):
        from_payload({**model_payload(prior), "state_dict": {}})
    assert nn.Linear(64, 64).weight.std() > 0.01  # and after a failed load too


def test_entropy_weight_falls_linearly_then_stays():
    objective = TokenizerObjective(TokenizerLoss(entropy_weight=0.1, entropy_weight_final=0.01, entropy_decay_steps=100))
    assert objective.entropy_weight(0) == pytest.approx(0.1)
    assert objective.entropy_weight(50) == pytest.approx(0.055)
    assert objective.entropy_weight(100) == objective.entropy_weight(10_000) == pytest.approx(0.01)


def test_a_grown_decoder_starts_as_the_one_it_grew_from():
    small, _ = tiny_models()
    grown = Tokenizer(dataclasses.replace(TINY_TOKENIZER, decoder_blocks=3)).eval()
    assert keep_encoder_of(grown, small) == [small.model_id]
    start_decoder_from(grown, small)
    images = torch.rand(2, 3, 20, 35)
    tokens = small.encode_index(images)
    assert torch.equal(grown.encode_index(images), tokens)
    assert torch.equal(grown.decode_index(tokens), small.decode_index(tokens))
    # the extra blocks are the identity only until training moves them: they do get a gradient
    grown.train()
    reconstruction = grown(images)[0]
    (reconstruction - images).pow(2).mean().backward()
    assert grown.decoder[2].conv2.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("change", [{"decoder_channels": 12}, {"bits": 7}, {"decoder_blocks": 0}])
def test_a_decoder_cannot_grow_from_another_shape(change):
    from stkcodec.errors import ModelMismatchError

    small, _ = tiny_models()
    other = Tokenizer(dataclasses.replace(TINY_TOKENIZER, **change))
    with pytest.raises(ModelMismatchError, match="the decoder to start from has"):
        start_decoder_from(other, small)
