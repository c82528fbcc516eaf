import pytest
import torch
from click.testing import CliRunner

from stkcodec.checkpoint import read_checkpoint
from stkcodec.cli import main
from stkcodec.objectives import TokenizerLoss, TokenizerObjective
from stkcodec.patches import patch_vectors
from stkcodec.teacher import PatchTeacher, kmeans, tree_order
from stkcodec.tokenizer import Tokenizer, TokenizerConfig

from .conftest import TINY_TOKENIZER
from .test_train import TINY, run


def test_patch_vectors_match_the_tokenizer_grid_and_padding():
    images = torch.rand(2, 3, 7, 13)
    patches = patch_vectors(images, 5)
    assert patches.shape == (2, 2, 3, 75)
    assert torch.equal(patches[1, 0, 0].view(3, 5, 5), images[1, :, :5, :5])
    corner = patches[0, 1, 2].view(3, 5, 5)  # rows 5..9, columns 10..14: edges replicated
    assert torch.equal(corner[:, :2, :3], images[0, :, 5:7, 10:13])
    assert torch.equal(corner[:, 4, 4], images[0, :, 6, 12])


def test_kmeans_finds_well_separated_clusters():
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    points = (centres.repeat(250, 1) + 0.1 * torch.randn(1000, 2, generator=generator))
    found = kmeans(points, 4, iterations=10, generator=generator)
    distances = torch.cdist(centres, found).min(1).values
    assert distances.max() < 0.1


def test_tree_order_gives_the_first_bit_to_the_widest_split():
    # Points on a line: the principal component is the line, so bit 0 splits it in halves and
    # bit 1 splits each half again.
    centroids = torch.tensor([[float(v), 0.0] for v in (5, 0, 7, 2, 6, 1, 3, 4)])
    ordered = tree_order(centroids)
    assert sorted(ordered[:, 0].tolist()) == list(range(8))
    low_half = {int(ordered[i, 0]) for i in range(8) if i % 2 == 0}
    assert low_half in ({0, 1, 2, 3}, {4, 5, 6, 7})
    quarters = {frozenset(int(ordered[i, 0]) for i in range(8) if i % 4 == r) for r in range(4)}
    assert all(max(q) - min(q) == 1 for q in quarters)


def test_teacher_bits_name_the_nearest_centroid_and_reconstruct_it():
    generator = torch.Generator().manual_seed(1)
    centroids = torch.rand(8, 3 * 2 * 2, generator=generator)
    teacher = PatchTeacher(centroids, patch_size=2)
    cells = torch.tensor([[5, 0, 3], [7, 1, 2]])
    image = torch.nn.functional.fold(centroids[cells.flatten()].t().unsqueeze(0), (4, 6), kernel_size=2, stride=2)
    bits = teacher.bits(image)
    assert torch.equal((bits * torch.tensor([1.0, 2.0, 4.0])).sum(-1)[0].long(), cells)
    assert torch.allclose(teacher.reconstruct(image), image)


def test_teacher_loss_pulls_the_encoder_bits_to_the_teacher(frames_dir):
    from stkcodec.data import ImageFolder

    torch.manual_seed(0)
    model = Tokenizer(TINY_TOKENIZER)
    objective = TokenizerObjective(TokenizerLoss(entropy_weight=0.0, teacher_weight=1.0, teacher_decay_steps=0),
                                   patch_size=5, bits=TINY_TOKENIZER.bits)
    data = ImageFolder(frames_dir, cache=False)
    generator = torch.Generator().manual_seed(0)
    objective.prepare(model, data, saved=None, resumed=False, generator=generator, log=lambda message: None)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    batch = data.sample(4, generator)

    target = objective.teacher.bits(batch)

    def agreement() -> float:  # the fraction of the encoder's bits that are the teacher's
        model.eval()
        with torch.no_grad():
            codes, _ = model.encode(batch)
        model.train()
        return float(((codes.permute(0, 2, 3, 1) > 0).float() == target).float().mean())

    before, losses = agreement(), []
    for step in range(60):
        loss, metrics = objective.loss(model, batch, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(metrics["teacher"]))
    assert losses[-1] < losses[0] / 2
    assert agreement() > before + 0.2


def test_teacher_weight_falls_linearly_and_off_means_no_teacher(frames_dir):
    objective = TokenizerObjective(TokenizerLoss(teacher_weight=1.0, teacher_weight_final=0.0, teacher_decay_steps=10))
    assert [objective.teacher_weight(s) for s in (0, 5, 10, 20)] == [1.0, 0.5, 0.0, 0.0]
    plain = TokenizerObjective(TokenizerLoss(teacher_weight=0.0))
    plain.prepare(Tokenizer(TINY_TOKENIZER), None, saved=None, resumed=False, generator=torch.Generator(), log=lambda message: None)
    assert plain.teacher is None and plain.state_dict() is None


def test_cli_trains_with_a_teacher_and_resume_keeps_it(tmp_path, frames_dir):
    common = ["--quiet", "train", "tokenizer", "--data", frames_dir, "--batch-size", "2", *TINY,
              "--teacher-weight", "1", "--teacher-decay-steps", "6"]
    result = run([*common, "--steps", "3", "-o", str(tmp_path / "a.pt"), "--checkpoint-dir", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    checkpoint, = (tmp_path / "a").glob("*/checkpoint.pt")
    state = read_checkpoint(checkpoint)
    centroids = state["objective"]["centroids"]
    assert centroids.shape == (64, 75)
    assert "objective" not in read_checkpoint(tmp_path / "a.pt")  # model files carry no training state
    assert "teacher_weight" not in state["config"]  # the recipe is not the model's shape...
    loss = TokenizerLoss(**state["provenance"]["recipe"]["loss"])  # ...it is kept beside it
    assert loss.teacher_weight == 1.0 and loss.teacher_decay_steps == 6

    objective = TokenizerObjective(loss, bits=6)
    objective.prepare(Tokenizer(TokenizerConfig(**state["config"])), None, saved=state["objective"], resumed=True,
                      generator=torch.Generator(), log=lambda message: None)
    assert torch.equal(objective.teacher.centroids, centroids)  # resumed, not refitted
    result = run([*common, "--steps", "5", "--resume", str(checkpoint), "-o", str(tmp_path / "b.pt"),
                  "--checkpoint-dir", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert read_checkpoint(tmp_path / "b.pt")["step"] == 5
    assert CliRunner().invoke(main, ["train", "tokenizer", "--help"]).output.count("--teacher") == 3


def test_prototypes_start_at_kmeans_on_a_fresh_model_only(frames_dir):
    import dataclasses

    from stkcodec.data import ImageFolder

    config = dataclasses.replace(TINY_TOKENIZER, prototypes=True)
    torch.manual_seed(0)
    model = Tokenizer(config)
    objective = TokenizerObjective(TokenizerLoss(teacher_weight=0.0), bits=6)  # k-means only for the prototypes
    data = ImageFolder(frames_dir, cache=False)
    objective.prepare(model, data, saved=None, resumed=False, generator=torch.Generator().manual_seed(0),
                      log=lambda message: None)
    assert objective.teacher is None
    prototypes = model.prototypes.prototypes.detach().clone()
    assert prototypes.shape == (64, 75)
    generator = torch.Generator().manual_seed(0)
    reference = PatchTeacher.fit(lambda n: data.sample(n, generator), patch_size=5, bits=6, generator=generator)
    assert torch.equal(prototypes, reference.centroids)
    again = Tokenizer(config)
    objective.prepare(again, data, saved=None, resumed=True, generator=torch.Generator(), log=lambda message: None)
    assert not torch.equal(again.prototypes.prototypes, prototypes)  # a resumed run keeps its own


@pytest.mark.parametrize("height, width", [(1, 1), (7, 13), (101, 151)])
def test_prototype_encoder_handles_odd_sizes(height, width):
    import dataclasses

    model = Tokenizer(dataclasses.replace(TINY_TOKENIZER, prototypes=True)).eval()
    tokens = model.encode_index(torch.rand(2, 3, height, width))
    assert tokens.shape == (2, -(-height // 5), -(-width // 5))
    assert model.decode_index(tokens, size=(height, width)).shape == (2, 3, height, width)
