import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from stkcodec.exact import ExactPrior, exp2_weights
from stkcodec.prior import Prior, PriorConfig

from .conftest import TINY_PRIOR, tiny_models


def test_causality_changing_a_token_changes_no_earlier_prediction():
    _, prior = tiny_models()
    tokens = torch.randint(0, 64, (1, 4, 6))
    base = prior(tokens)
    for t in (0, 7, 23):
        changed = tokens.clone().flatten()
        changed[t] = (changed[t] + 1) % 64
        logits = prior(changed.view(1, 4, 6))
        # prediction i reads tokens < i: positions <= t must not move, t + 1 must
        assert torch.equal(logits[:, : t + 1], base[:, : t + 1])
        if t + 1 < 24:
            assert not torch.allclose(logits[:, t + 1], base[:, t + 1])


def test_kv_cache_steps_match_full_forward():
    _, prior = tiny_models()
    tokens = torch.randint(0, 64, (3, 5, 7))
    full = prior(tokens)
    cache = prior.new_cache()
    previous = torch.full((3,), prior.start_token)
    steps = []
    for position in range(35):
        steps.append(prior.step(previous, position, 7, cache))
        previous = tokens.flatten(1)[:, position]
    assert (torch.stack(steps, 1) - full).abs().max() < 1e-4


def test_exact_prior_steps_equal_teacher_forced_pass_bit_for_bit():
    _, prior = tiny_models()
    exact = ExactPrior(prior)
    tokens = torch.randint(0, 64, (3, 4, 6))
    full = exact.logits(tokens)
    cache = exact.new_cache(3, 24)
    previous = torch.full((3,), exact.start_token)
    for position in range(24):
        step = exact.step(previous, position, 6, cache)
        assert np.array_equal(step, full[:, position])
        previous = tokens.flatten(1)[:, position]
    assert np.array_equal(full, np.round(full))  # integers only


def test_exact_prior_is_batch_independent_and_close_to_float():
    _, prior = tiny_models()
    exact = ExactPrior(prior)
    tokens = torch.randint(0, 64, (5, 4, 6))
    together = exact.logits(tokens)
    for index in range(5):
        assert np.array_equal(exact.logits(tokens[index : index + 1])[0], together[index])
    float_log_p = prior(tokens).double().log_softmax(-1)
    weights = torch.from_numpy(exact.weights(together))
    exact_log_p = (weights / weights.sum(-1, keepdim=True)).clamp_min(1e-300).log()
    kl = (float_log_p.exp() * (float_log_p - exact_log_p)).sum(-1)
    assert kl.mean() < 1e-3  # nats per token, with logits made extreme on purpose: next to nothing


@pytest.mark.slow
def test_exact_prior_same_bits_with_one_blas_thread(tmp_path):
    """The exact prior's products run in PyTorch's kernels (torch.matmul); one thread must give the same bits as four."""
    script = tmp_path / "weights.py"
    script.write_text(
        "import sys, numpy as np, torch\n"
        "from stkcodec.exact import ExactPrior\n"
        "from tests.conftest import tiny_models\n"
        "tokens = torch.randint(0, 64, (16, 8, 12), generator=torch.Generator().manual_seed(3))\n"
        "exact = ExactPrior(tiny_models()[1])\n"
        "np.save(sys.argv[1], exact.weights(exact.logits(tokens)))\n")
    root = Path(__file__).resolve().parent.parent
    results = []
    for threads in ("1", "4"):
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
               "PYTHONPATH": str(root)}
        out = tmp_path / f"weights-{threads}.npy"
        subprocess.run([sys.executable, str(script), str(out)], env=env, check=True, cwd=root)
        results.append(np.load(out))
    assert np.array_equal(results[0], results[1])


def test_exp2_weights_are_powers_of_two():
    z = np.array([0.0, 256.0, 512.0, 128.0, 1e9])
    weights = exp2_weights(z, 16)
    assert weights[:3].tolist() == [65536.0, 32768.0, 16384.0]
    assert abs(weights[3].item() - 65536 / 2**0.5) <= 0.5
    assert weights[4].item() == 0.0


def test_sampling_is_reproducible_with_a_seed():
    _, prior = tiny_models()
    first = prior.sample(3, 3, 4, generator=torch.Generator().manual_seed(5))
    second = prior.sample(3, 3, 4, generator=torch.Generator().manual_seed(5))
    other = prior.sample(3, 3, 4, generator=torch.Generator().manual_seed(6))
    assert torch.equal(first, second) and not torch.equal(first, other)
    assert first.shape == (3, 3, 4) and first.max() < 64


def test_grid_larger_than_positions_is_refused():
    prior = Prior(PriorConfig(**{**TINY_PRIOR.__dict__, "max_rows": 4, "max_cols": 4}))
    with pytest.raises(ValueError, match="exceeds the prior's 4x4"):
        prior(torch.zeros(1, 5, 4, dtype=torch.long))
