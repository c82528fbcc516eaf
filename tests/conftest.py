"""Shared fixtures: tiny randomly initialised models (fast, honest for invariants) and images."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch
from PIL import Image

from stkcodec.checkpoint import from_payload, model_classes, model_payload, save_model
from stkcodec.enhancer import Enhancer, EnhancerConfig
from stkcodec.prior import Prior, PriorConfig
from stkcodec.tokenizer import Tokenizer, TokenizerConfig
from stkcodec.zoo import CodecModel

TINY_TOKENIZER = TokenizerConfig(patch_size=5, encoder_channels=8, encoder_blocks=1, decoder_channels=8, decoder_blocks=1, bits=6,
                                 prototypes=False)
TINY_PRIOR = PriorConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=2)


def tiny_models(seed: int = 0) -> tuple[Tokenizer, Prior]:
    """A random tokenizer and prior, each as a model file would load it (model_id set)."""
    torch.manual_seed(seed)
    tokenizer = Tokenizer(TINY_TOKENIZER)
    build_prior, _ = model_classes("prior")
    prior = build_prior(TINY_PRIOR)
    with torch.no_grad():  # a random prior far from uniform, so coding is not trivially flat
        prior.head.weight.mul_(50)
    return from_payload(model_payload(tokenizer)), from_payload(model_payload(prior))


@pytest.fixture(scope="session")
def tiny_codec_model() -> CodecModel:
    return CodecModel(*tiny_models())


def _model_folder(folder, *, layered: bool, tokens: bool = False) -> str:
    tokenizer, prior = tiny_models()
    save_model(tokenizer, folder / "tokenizer.pt")
    trained_on = {"train": {"tokenizer_id": tokenizer.model_id}}
    save_model(prior, folder / "prior.pt", provenance=trained_on)
    if layered:
        save_model(tiny_enhancer(tokens=tokens), folder / "enhancer.pt", provenance=trained_on)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A model folder (tokenizer.pt + prior.pt) like models/, for --model."""
    return _model_folder(tmp_path_factory.mktemp("tiny-model"), layered=False)


# Slow tests whose files this suite's conftest does not own carry the mark from here.
SLOW_ELSEWHERE = {"tests/test_hardening.py::test_sigkill_leaves_outputs_complete_or_absent"}


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if item.nodeid in SLOW_ELSEWHERE:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def cache_in_a_temporary_folder(tmp_path_factory):
    """Decoded training frames are cached under $STKC_CACHE: never in the user's ~/.cache."""
    previous = os.environ.get("STKC_CACHE")
    os.environ["STKC_CACHE"] = str(tmp_path_factory.mktemp("stkc-cache"))
    yield
    if previous is None:
        os.environ.pop("STKC_CACHE", None)
    else:
        os.environ["STKC_CACHE"] = previous


def make_image(width: int, height: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A smooth image with some texture: gradients plus noise, like a rendered frame."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / max(1, width - 1), y * 255 / max(1, height - 1), (x + y) % 64 * 4], -1)
    array = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(array, "RGB").convert(mode)


@pytest.fixture
def frames_dir(tmp_path) -> str:
    """A folder of eight 150×100 JPEG frames (and one in a subfolder)."""
    folder = tmp_path / "frames"
    (folder / "sub").mkdir(parents=True)
    for index in range(8):
        make_image(150, 100, seed=index).save(folder / f"{index:05d}_im.jpg", quality=90)
    make_image(150, 100, seed=99).save(folder / "sub" / "extra.png")
    return str(folder)


TINY_ENHANCER = EnhancerConfig(levels=3, latent_channels=4, width=8, encoder_blocks=1, decoder_blocks=1,
                               context_width=8, refine_channels=4)


def tiny_enhancer(seed: int = 0, context_gain: float = 20.0, *, tokens: bool = False,
                  distribution: str = "gaussian", leading: tuple[int, ...] = ()) -> Enhancer:
    """A random enhancement layer whose output is not the base's (its last layers start at zero);
    `context_gain` scales the context network's outputs (wild means and scales test the coder);
    with `tokens`, its entropy model reads the tiny tokenizer's tokens too; `distribution`, the
    family of its coding tables; `leading`, the channels each half codes first (four passes)."""
    torch.manual_seed(seed)
    enhancer = Enhancer(dataclasses.replace(TINY_ENHANCER, token_values=2**TINY_TOKENIZER.bits if tokens else 0,
                                            token_width=4, distribution=distribution, leading_channels=leading))
    enhancer.initialise_gains([0.002, 0.01, 0.05])
    with torch.no_grad():
        enhancer.dec_out.weight.normal_(0, 0.02)
        enhancer.log_gain.add_(1.0)  # latents of a few units: symbols other than 0 in every pass
        enhancer.ctx_out.weight.mul_(context_gain)
        if tokens:  # the base network's last layers start at zero: make them count
            enhancer.base_out.weight.normal_(0, 0.5 * context_gain / 20)
            enhancer.base_ctx.weight.normal_(0, 0.5)
        if leading:  # the rest networks start at zero too
            for net in (enhancer.anchor_rest, enhancer.other_rest):
                net.out.weight.normal_(0, 0.5 * context_gain / 20)
    return from_payload(model_payload(enhancer))


@pytest.fixture(scope="session")
def tiny_layered_model() -> CodecModel:
    """Tiny tokenizer and prior with a tiny enhancement layer: quality levels 1 to 4."""
    return CodecModel(*tiny_models(), tiny_enhancer())


@pytest.fixture(scope="session")
def tiny_token_layered_model() -> CodecModel:
    """As tiny_layered_model, with an enhancement layer whose entropy model reads the base tokens."""
    return CodecModel(*tiny_models(), tiny_enhancer(tokens=True))


@pytest.fixture(scope="session")
def tiny_laplace_layered_model() -> CodecModel:
    """As tiny_token_layered_model, with Laplace coding tables."""
    return CodecModel(*tiny_models(), tiny_enhancer(tokens=True, distribution="laplace"))


@pytest.fixture(scope="session")
def tiny_leading_layered_model() -> CodecModel:
    """As tiny_laplace_layered_model, coding two leading channels of each half first (four passes)."""
    return CodecModel(*tiny_models(), tiny_enhancer(tokens=True, distribution="laplace", leading=(1, 2)))


@pytest.fixture(scope="session")
def tiny_layered_model_dir(tmp_path_factory) -> str:
    """A model folder with an enhancement layer (enhancer.pt), for --model: levels 1 to 4."""
    return _model_folder(tmp_path_factory.mktemp("tiny-layered-model"), layered=True)


@pytest.fixture(scope="session")
def tiny_token_layered_model_dir(tmp_path_factory) -> str:
    """As tiny_layered_model_dir, with an enhancement layer that reads the base tokens."""
    return _model_folder(tmp_path_factory.mktemp("tiny-token-layered-model"), layered=True, tokens=True)
