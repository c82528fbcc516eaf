"""A k-means teacher for the tokenizer's first steps.

Plain k-means on p×p patches is a strong quantizer for these frames: with 1,024 centroids of 5×5
patches it reconstructs valid frames at 24.4 dB with no neighbours and no decoder network, 3 dB
above a tokenizer trained end to end from scratch, whose straight-through BSQ settles on a poor
partition of patch space. So the tokenizer first learns to put each patch in its k-means cell:
the teacher gives every patch the bits of its nearest centroid, and the objective asks the
encoder's latents to take those signs (a binary cross-entropy per bit) while the decoder learns
to reconstruct from the codes. The teacher's weight then fades and reconstruction alone leads.

BSQ codes are bits, so the centroids are numbered such that one bit separates related patches:
a balanced binary tree, each node's centroids split at the median of their principal
component, gives the top split to bit 0, the next to bit 1, and so on.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

from .bsq import BSQ
from .patches import patch_vectors


def nearest(points: torch.Tensor, centroids: torch.Tensor, chunk: int = 16384) -> torch.Tensor:
    """Index of each point's nearest centroid (squared Euclidean distance)."""
    norms = centroids.pow(2).sum(1)
    out = [torch.argmin(norms - 2 * part @ centroids.t(), dim=1) for part in points.split(chunk)]
    return torch.cat(out)


def kmeans(points: torch.Tensor, k: int, *, iterations: int, generator: torch.Generator,
           on_iteration: Callable[[], None] | None = None) -> torch.Tensor:
    """Lloyd's algorithm from k distinct random points; an empty cell restarts at a random point.
    `on_iteration()` is called after each of the `iterations` (progress)."""
    if len(points) < k:
        raise ValueError(f"k-means needs at least {k} points, got {len(points)}")
    centroids = points[torch.randperm(len(points), generator=generator)[:k]].clone()
    for _ in range(iterations):
        cells = nearest(points, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, cells, points)
        counts = torch.bincount(cells, minlength=k)
        restart = points[torch.randint(len(points), (k,), generator=generator)]
        centroids = torch.where((counts > 0)[:, None], sums / counts.clamp_min(1)[:, None].to(points.dtype), restart)
        if on_iteration is not None:
            on_iteration()
    return centroids


def tree_order(centroids: torch.Tensor) -> torch.Tensor:
    """Reorder 2**bits centroids so that bit d of an index is the side of the depth-d split."""
    count = len(centroids)
    bits = count.bit_length() - 1
    if 2**bits != count:
        raise ValueError(f"a tree order needs a power of two centroids, got {count}")
    index = torch.zeros(count, dtype=torch.int64)

    def split(members: torch.Tensor, depth: int) -> None:
        if depth == bits:
            return
        group = centroids[members]
        centred = group - group.mean(0)
        axis = torch.linalg.svd(centred, full_matrices=False).Vh[0] if len(group) > 1 else torch.zeros(group.shape[1])
        order = members[torch.argsort(centred @ axis, stable=True)]
        upper = order[len(order) // 2 :]
        index[upper] += 2**depth
        split(order[: len(order) // 2], depth + 1)
        split(upper, depth + 1)

    split(torch.arange(count), 0)
    ordered = torch.empty_like(centroids)
    ordered[index] = centroids
    return ordered


POINTS_PER_CENTROID = 300  # 512 crops of 150×100 give 307,200 patches of 5×5: all of them for 1,024 centroids


class PatchTeacher:
    """k-means centroids of a tokenizer's patches, numbered as BSQ codes (see tree_order)."""

    def __init__(self, centroids: torch.Tensor, patch_size: int) -> None:
        self.centroids = centroids.float()
        self.patch_size = patch_size
        self.quantizer = BSQ(bits=len(centroids).bit_length() - 1)  # the tokenizer's numbering of codes

    @classmethod
    def fit(cls, sample_batch, *, patch_size: int, bits: int, images: int = 512, iterations: int = 20,
            generator: torch.Generator, on_iteration: Callable[[], None] | None = None) -> "PatchTeacher":
        """k-means with 2**bits centroids on the patches of `images` training crops
        (`sample_batch(n)` -> (n, 3, H, W)); `on_iteration()` after each k-means iteration."""
        points = torch.cat([patch_vectors(sample_batch(min(64, images - done)), patch_size).flatten(0, 2)
                            for done in range(0, images, 64)])
        cap = POINTS_PER_CENTROID * 2**bits  # k-means's cost grows with points × centroids
        if len(points) > cap:
            points = points[torch.randperm(len(points), generator=generator)[:cap]]
        centroids = kmeans(points, 2**bits, iterations=iterations, generator=generator, on_iteration=on_iteration)
        return cls(tree_order(centroids), patch_size)

    def state_dict(self) -> dict:
        return {"centroids": self.centroids.clone(), "patch_size": self.patch_size}

    @classmethod
    def from_state_dict(cls, state: dict) -> "PatchTeacher":
        return cls(state["centroids"], int(state["patch_size"]))

    def cells(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, h, w) int64: the index of each patch's nearest centroid."""
        patches = patch_vectors(images, self.patch_size)
        return nearest(patches.flatten(0, 2), self.centroids.to(images.device)).view(patches.shape[:3])

    def bits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, h, w, bits) float 0/1: the code bits of each patch's nearest centroid."""
        return (self.quantizer.to(images.device).index_to_codes(self.cells(images)) > 0).float()

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """Each patch replaced by its nearest centroid: the teacher's own reconstruction."""
        p = self.patch_size
        cells = self.cells(images)
        b, h, w = cells.shape
        columns = self.centroids.to(images.device)[cells.flatten()].view(b, h * w, -1).transpose(1, 2)
        out = F.fold(columns, (h * p, w * p), kernel_size=p, stride=p)
        return out[..., : images.shape[-2], : images.shape[-1]]
