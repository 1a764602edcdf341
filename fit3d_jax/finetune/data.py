"""Stage II samples: random training views uniformly over all views of all scenes, prepared on
the host (image read and resized to a multiple of the patch size, mask reduced to token weights, random
horizontal flip) by worker threads ahead of the training step. Images stay uint8: the step
normalises them on the device (a quarter of the host work and of the transfer).

The order is a function of (seed, step): a permutation of all views per epoch, so a resumed run
draws exactly the batches the uninterrupted one would have.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os

import cv2
import numpy as np

from fit3d_jax.finetune.store import StoredScene
from fit3d_jax.images import load_image, patch_multiple_size
from fit3d_jax.scenes import SceneError
from fit3d_jax.scenes.pixels import decode_mask


@dataclasses.dataclass(frozen=True)
class Sample:
    scene: int
    view: int
    flip: bool


@dataclasses.dataclass
class HostBatch:
    step: int  # 0-based index of the training step this batch is for
    samples: list[Sample]
    images: np.ndarray  # (B, h_p, w_p, 3) uint8 RGB (multiples of the patch size), flipped where the sample says
    token_weights: np.ndarray  # (B, h, w) float32: fraction of unmasked pixels under each token


class Sampler:
    def __init__(self, scenes: list[StoredScene], batch_size: int, seed: int, flip_probability: float = 0.5):
        self.views = [(s, v) for s, scene in enumerate(scenes) for v in range(len(scene.views))]
        if batch_size > len(self.views):
            raise ValueError(f"batch size {batch_size} exceeds the {len(self.views)} training views")
        self.batch_size, self.seed, self.flip_probability = batch_size, seed, flip_probability
        self.steps_per_epoch = len(self.views) // batch_size

    def batch(self, step: int) -> list[Sample]:
        epoch, position = divmod(step, self.steps_per_epoch)
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.views))
        flips = np.random.default_rng([self.seed, epoch, 1]).uniform(size=len(self.views)) < self.flip_probability
        picked = order[position * self.batch_size : (position + 1) * self.batch_size]
        return [Sample(*self.views[i], bool(flips[i])) for i in picked]


def image_size(scenes: list[StoredScene], patch_size: int) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """(full size (H, W), ViT input (multiples of the patch size), token grid (h, w)); every view must share them."""
    sizes = {(v.height, v.width) for s in scenes for v in s.views}
    if len(sizes) != 1:
        raise SceneError(f"stage II needs one image size across scenes, the store has {sorted(sizes)}")
    full = sizes.pop()
    model = patch_multiple_size(*full, patch_size=patch_size)  # resized down, as the authors do
    return full, model, (model[0] // patch_size, model[1] // patch_size)


def prepare(scenes: list[StoredScene], sample: Sample, model_size: tuple[int, int], grid: tuple[int, int]):
    view = scenes[sample.scene].views[sample.view]
    image = load_image(view.image)
    if image.shape[:2] != (view.height, view.width):
        raise SceneError(f"{view.image}: {image.shape[1]}x{image.shape[0]}, but the store says {view.width}x{view.height}")
    image = cv2.resize(image, model_size[::-1], interpolation=cv2.INTER_AREA)
    if view.mask is not None:  # read as stage I read it
        mask = decode_mask(view.mask, view.width, view.height)
        weights = cv2.resize(mask.astype(np.float32), grid[::-1], interpolation=cv2.INTER_AREA)
    else:
        weights = np.ones(grid, np.float32)
    if sample.flip:
        image, weights = image[:, ::-1], weights[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(weights)


class BatchMaker:
    """``make(step)`` -> the HostBatch of that step, its samples prepared by worker threads (for
    ``fit3d_jax.prefetch.Prefetcher``)."""

    def __init__(self, scenes, sampler: Sampler, model_size, grid, *, workers: int | None = None):
        self.scenes, self.sampler, self.model_size, self.grid = scenes, sampler, model_size, grid
        # cv2 releases the GIL, so decoding scales with cores; several GPUs need them all.
        self.pool = concurrent.futures.ThreadPoolExecutor(workers or min(32, os.cpu_count() or 8))

    def __call__(self, step: int) -> HostBatch:
        samples = self.sampler.batch(step)
        prepared = list(self.pool.map(lambda s: prepare(self.scenes, s, self.model_size, self.grid), samples))
        return HostBatch(step, samples, np.stack([p[0] for p in prepared]), np.stack([p[1] for p in prepared]))

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
