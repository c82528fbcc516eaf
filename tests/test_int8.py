"""The int8 arithmetic of the exact prior: float32 products that are exact, a calibrated prior
that codes as the float64 one does within a hair of its bits, and its command."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from stkcodec import exact
from stkcodec.checkpoint import from_payload, load_model, model_payload
from stkcodec.cli import main
from stkcodec.coder import decode_grids, encode_grids
from stkcodec.prior import PriorConfig, build_prior, calibrate_int8

from .conftest import TINY_PRIOR, tiny_models

SCHEDULE = "bayer8:1,2,4,8,16,32"


def float64_products(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return torch.matmul(torch.from_numpy(a.astype(np.float64)), torch.from_numpy(b.astype(np.float64))).numpy()


@pytest.mark.parametrize("inner", [1, 512, 1040, 3000])  # 1040 and 3000: more than one float32 run
def test_float32_products_equal_float64_ones_at_the_bound(inner):
    """Operands at ±127 (the worst case, every term the largest) and at random: exact."""
    rng = np.random.default_rng(inner)
    worst = np.full((3, inner), 127, dtype=np.float32)
    random = rng.integers(-127, 128, (64, inner)).astype(np.float32)
    for a in (worst, -worst, random):
        b = rng.integers(-127, 128, (inner, 48)).astype(np.float32)
        b[:, 0] = 127  # a column of the largest terms
        assert np.array_equal(exact.products32(a, b, 127 * 127), float64_products(a, b))


def test_attention_products_are_exact_over_a_long_cache():
    """Attention weights up to 2**7 times values up to 127, over 4,097 keys (a 64x64 tile)."""
    rng = np.random.default_rng(0)
    weights = rng.integers(0, 2**exact.INT8_ATTENTION_BITS + 1, (2, 4, 9, 4097)).astype(np.float32)
    weights[0, 0, 0] = 2**exact.INT8_ATTENTION_BITS
    values = rng.integers(-127, 128, (2, 4, 4097, 16)).astype(np.float32)
    values[0, 0, :, 0] = 127
    bound = 2**exact.INT8_ATTENTION_BITS * exact.INT8
    assert np.array_equal(exact.products32(weights, values, bound), float64_products(weights, values))


def test_a_naive_float32_product_is_not_exact_here():
    """What `products32` guards against: one float32 product past 2**24 loses integers (this sum,
    3,001 x 127 x 127, is odd and above 2**25, so no float32 holds it, whatever the order)."""
    a = np.full((1, 3001), 127, dtype=np.float32)
    b = np.full((3001, 1), 127, dtype=np.float32)
    naive = (torch.from_numpy(a) @ torch.from_numpy(b)).numpy().astype(np.float64)
    assert not np.array_equal(naive, float64_products(a, b))
    assert np.array_equal(exact.products32(a, b, 127 * 127), float64_products(a, b))


def test_quantise_rounds_half_to_even_and_clips():
    x = np.array([-1e9, -254.0, -3.0, -1.0, 1.0, 3.0, 5.0, 253.0, 1e9])
    assert exact.quantise(x, 2.0).tolist() == [-127, -127, -2, -0, 0, 2, 2, 126, 127]
    assert exact.quantise(x, 2.0).dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_element_wise_steps_in_pytorch_give_numpys_values(dtype):
    """The exact networks' roundings, softmax exponents and weights run in PyTorch's kernels:
    each the value NumPy gives (the functions' earlier form), on ties, odd divisors and large
    integers, in any layout; a transposed view as the attention's keys are."""
    rng = np.random.default_rng(0)
    x = rng.integers(-2**26, 2**26, (64, 40, 33)).astype(np.float64)
    x[0, 0, :8] = [1.5 * 3, -2.5 * 3, 0.5 * 3, 4.5 * 3, 3.0, -3.0, 0.0, -0.0]  # ties at a step of 3
    x = x.astype(dtype)
    for step in (3.0, 2.0**-3 * 4096, 0.7316999 * 4096, 123456.789):
        reference = np.clip(np.round(x / step), -127, 127)
        assert np.array_equal(exact._rounded_tensor(x, step, 127).numpy(), reference)
        assert np.array_equal(exact.quantise(x.swapaxes(-1, -2), step), reference.swapaxes(-1, -2).astype(np.float32))
    for scale in (0.013, 1 / 4096 / 7.3, 3e-4):
        e = np.round(np.multiply(x, scale * exact.LOG2_E * exact.EXP_STEPS, dtype=np.float64))  # to_exponents
        expected = (e.max(-1, keepdims=True) - e).astype(np.int64)
        assert np.array_equal(exact.softmax_exponents(x, scale), expected)
        for bits, table_dtype in ((16, np.float64), (7, np.float32)):
            assert np.array_equal(exact.softmax_weights(x, scale, bits, table_dtype),
                                  exact.exp2_weights(expected, bits, table_dtype))


def tiny_float_prior(seed: int = 0, head_gain: float = 50.0):
    torch.manual_seed(seed)
    prior = build_prior(PriorConfig(**{**TINY_PRIOR.__dict__, "schedule": SCHEDULE}))
    with torch.no_grad():  # far from uniform, so coding is not trivially flat
        prior.head.weight.mul_(head_gain)
    return from_payload(model_payload(prior))


@pytest.fixture(scope="module")
def int8_prior():
    prior = tiny_float_prior()
    calibration = torch.randint(0, 64, (24, 6, 7), generator=torch.Generator().manual_seed(1))
    return prior, from_payload(model_payload(calibrate_int8(prior, calibration)))  # as its file loads


def test_calibration_makes_a_new_model_with_a_step_per_product(int8_prior):
    prior, int8 = int8_prior
    assert int8.config.arithmetic == "int8" and prior.config.arithmetic == "float64"
    assert int8.model_id != prior.model_id
    steps = int8.int8_step_table()
    assert len(steps) == TINY_PRIOR.n_layers * 7 + 1 and all(step > 0 for step in steps.values())
    assert not hasattr(prior, "int8_steps")
    for name, tensor in prior.state_dict().items():  # the float network is the same, its products' weights rounded
        step = tensor.abs().amax(-1, keepdim=True) / 127 if name in int8.int8_weights() else 0.0
        assert ((int8.state_dict()[name] - tensor).abs() <= step / 2 + 1e-7).all()


def test_int8_twin_products_run_in_float32(int8_prior):
    twin = int8_prior[1].exact()
    assert twin.int8 and twin.head.weight_t.dtype == np.float32
    assert np.abs(twin.head.weight_t).max() == exact.INT8
    assert np.array_equal(twin.head.weight_t, np.round(twin.head.weight_t))


def test_int8_group_steps_equal_the_teacher_forced_pass_and_ignore_the_batch(int8_prior):
    twin = int8_prior[1].exact()
    tokens = np.random.default_rng(3).integers(0, 64, (5, 6, 7))
    teacher = twin.logits(tokens)
    assert np.array_equal(teacher, twin.coding_logits(tokens))
    for index in (0, 4):
        assert np.array_equal(twin.logits(tokens[index : index + 1])[0], teacher[index])


def test_int8_logits_do_not_depend_on_the_thread_count(int8_prior):
    twin = int8_prior[1].exact()
    tokens = np.random.default_rng(4).integers(0, 64, (8, 6, 7))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = twin.coding_logits(tokens)
        torch.set_num_threads(2)
        two = twin.coding_logits(tokens)
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(one, two)


def test_int8_probabilities_stay_close_to_the_float64_ones(int8_prior):
    """On grids of the kind it was calibrated on, the int8 twin's probabilities are the
    float64 twin's within a few percent of a bit per token (the shipped prior's cost: 0.02%)."""
    prior = tiny_float_prior(head_gain=5.0)
    int8 = calibrate_int8(prior, torch.randint(0, 64, (24, 6, 7), generator=torch.Generator().manual_seed(1)))
    tokens = np.random.default_rng(5).integers(0, 64, (6, 6, 7))

    def bits(twin):
        weights = twin.weights(twin.coding_logits(tokens))
        chosen = np.take_along_axis(weights, tokens.reshape(6, -1)[..., None], -1)[..., 0]
        return -np.log2(chosen / weights.sum(-1)).mean()

    wide, narrow = bits(prior.exact()), bits(int8.exact())
    assert narrow != wide and abs(narrow - wide) < 0.05 * wide


def test_int8_grids_round_trip_through_the_range_coder(int8_prior):
    twin = int8_prior[1].exact()
    generator = torch.Generator().manual_seed(6)
    grids = [torch.randint(0, 64, shape, generator=generator) for shape in ((6, 7), (13, 9), (1, 1))]
    payloads = encode_grids(twin, grids, (6, 7))
    decoded = decode_grids(twin, payloads, [tuple(g.shape) for g in grids], (6, 7))
    assert all(torch.equal(torch.as_tensor(d), g) for d, g in zip(decoded, grids))


def test_unknown_arithmetic_is_refused():
    with pytest.raises(ValueError, match="arithmetic 'int4'"):
        build_prior(PriorConfig(**{**TINY_PRIOR.__dict__, "arithmetic": "int4"}))


def test_train_int8_through_the_cli(tmp_path, frames_dir):
    tokenizer, _ = tiny_models()
    tokenizer_file, prior_file, out = tmp_path / "tokenizer.pt", tmp_path / "prior.pt", tmp_path / "int8.pt"
    torch.save(model_payload(tokenizer), tokenizer_file)
    torch.save(model_payload(tiny_float_prior()), prior_file)
    runner = CliRunner()
    command = ["train", "int8", str(prior_file), "--data", frames_dir, "--frames", "3", "--tokenizer", str(tokenizer_file)]
    result = runner.invoke(main, [*command, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "calibrated on 3 frames" in result.output
    made = load_model(out, kind="prior")
    assert made.config.arithmetic == "int8" and made.provenance["int8"]["grids"] == 3
    again = runner.invoke(main, [*command, "-o", str(out)])  # no --force: the file stays
    assert again.exit_code != 0 and "exists" in again.output and "Traceback" not in again.output
    twice = runner.invoke(main, ["train", "int8", str(out), "--data", frames_dir, "--tokenizer", str(tokenizer_file),
                                 "-o", str(tmp_path / "twice.pt")])
    assert twice.exit_code != 0 and "already has the int8 arithmetic" in twice.output


def test_an_int8_file_stores_int8_weights_and_codes_as_the_model_it_saved(int8_prior):
    """The file keeps each product's weights as int8 integers and a scale per row (smaller than
    float16), and the twin read back from it gives the integers of the model that was saved."""
    prior = tiny_float_prior()
    calibration = torch.randint(0, 64, (24, 6, 7), generator=torch.Generator().manual_seed(1))
    made = calibrate_int8(prior, calibration)
    payload = model_payload(made, half=True)
    stored = payload["state_dict"]
    assert stored["head.weight.int8"].dtype == torch.int8 and "head.weight" not in stored
    assert stored["head.weight.scale"].dtype == torch.float32
    size = sum(t.numel() * t.element_size() for t in stored.values())
    half = sum(t.numel() * 2 for t in prior.state_dict().values())
    assert size < 0.7 * half
    loaded = from_payload(payload)
    twin = loaded.exact()
    assert np.array_equal(twin.head.weight_t.T, stored["head.weight.int8"].numpy())  # the stored integers, exactly
    again = from_payload(model_payload(loaded, half=True))
    assert model_payload(again, half=True)["model_id"] == payload["model_id"]  # saving what was read changes nothing
    tokens = np.random.default_rng(7).integers(0, 64, (3, 6, 7))
    assert np.array_equal(again.exact().coding_logits(tokens), twin.coding_logits(tokens))
    steps_as_stored = from_payload(model_payload(made))  # float32 steps: the model as calibrated
    assert np.array_equal(steps_as_stored.exact().coding_logits(tokens), made.exact().coding_logits(tokens))
