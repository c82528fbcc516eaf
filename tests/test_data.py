import pytest
import torch

from stkcodec.data import ImageFolder, TokenGrids, find_frames, spread


@pytest.mark.parametrize("count, limit, expected", [
    (10, None, list(range(10))),
    (10, 10, list(range(10))),
    (10, 50, list(range(10))),
    (10, 1, [0]),
    (10, 4, [0, 2, 5, 7]),
    (1603, 256, None),
])
def test_spread_picks_distinct_indices_in_order_over_the_whole_range(count, limit, expected):
    picks = spread(count, limit)
    if expected is not None:
        assert picks == expected
    assert picks == sorted(set(picks)) and picks[0] == 0
    assert len(picks) == min(count, limit or count)
    assert picks[-1] + count / len(picks) >= count - 1  # reaches the last stretch, not just the first frames


def test_a_limited_evaluation_samples_the_whole_folder(frames_dir):
    folder = ImageFolder(frames_dir)
    every = torch.cat(list(folder.batches(4)))
    assert len(every) == 9
    picked = torch.cat(list(folder.batches(2, limit=3)))
    assert torch.equal(picked, every[[0, 3, 6]])


def test_limited_token_batches_and_bench_frames_are_spread_too(frames_dir):
    grids = TokenGrids(torch.arange(10)[:, None, None].expand(10, 2, 3).clone(), source={})
    assert torch.cat(list(grids.batches(3, limit=4)))[:, 0, 0].tolist() == [0, 2, 5, 7]
    every = find_frames(frames_dir)
    assert find_frames(frames_dir, 3) == [every[0], every[3], every[6]]


def test_mirrored_tokens_are_the_tokens_of_flipped_images(frames_dir, tmp_path):
    from click.testing import CliRunner

    from stkcodec.checkpoint import load_model, read_payload, save_model
    from stkcodec.cli import main

    from .conftest import tiny_models

    save_model(tiny_models()[0], tmp_path / "tokenizer.pt")
    args = ["--quiet", "tokenize", frames_dir, "--tokenizer", str(tmp_path / "tokenizer.pt")]
    assert CliRunner().invoke(main, [*args, "-o", str(tmp_path / "plain.pt")]).exit_code == 0
    result = CliRunner().invoke(main, [*args, "--mirrored", "-o", str(tmp_path / "mirrored.pt")])
    assert result.exit_code == 0, result.output
    plain, mirrored = read_payload(tmp_path / "plain.pt"), read_payload(tmp_path / "mirrored.pt")
    count = len(plain["tokens"])
    assert mirrored["tokens"].shape == (2 * count, *plain["tokens"].shape[1:])
    assert torch.equal(mirrored["tokens"][:count], plain["tokens"])
    assert mirrored["paths"] == plain["paths"] * 2 and mirrored["mirrored"] == [False] * count + [True] * count
    images = torch.cat(list(ImageFolder(frames_dir).batches(count)))
    flipped = load_model(tmp_path / "tokenizer.pt", kind="tokenizer").encode_index(images.flip(-1))
    assert torch.equal(mirrored["tokens"][count:].long(), flipped)
    assert not torch.equal(flipped, plain["tokens"].long().flip(-1))  # so the prior learns something new
