"""The device augmentation (device_augment) against the numpy/OpenCV reference (augment): each
operation, and the whole pipelines on fixed draws."""

import cv2
import jax
import numpy as np
import pytest

from fit3d_jax.probe import augment
from fit3d_jax.probe import device_augment as da
from fit3d_jax.probe.metrics import IGNORE_INDEX


def _segmentation_inputs(image, labels, draws, a, canvas):
    """A batch of one image under several draws, as Batches builds it."""
    arrays = da.segmentation_arrays(image, labels, canvas)
    count = len(draws.flip)
    return {k: np.stack([v] * count) for k, v in arrays.items()} | da.segmentation_draw_inputs([image.shape[:2]] * count, draws, a)


def _depth_inputs(image, depth, draws, canvas):
    arrays = da.depth_arrays(image, depth, canvas)
    count = len(draws.flip)
    return {k: np.stack([v] * count) for k, v in arrays.items()} | da.depth_draw_inputs([depth.shape] * count, draws)


def _primitives(jaxpr) -> set[str]:
    """Every primitive of a jaxpr, those of its sub-jaxprs included."""
    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else [param]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    names |= _primitives(inner)
    return names


def test_rgb_to_hsv_is_opencvs_for_every_colour():
    v = np.arange(256, dtype=np.uint8)
    rgb = np.stack(np.meshgrid(v, v, v, indexing="ij"), -1).reshape(4096, 4096, 3)
    np.testing.assert_array_equal(np.asarray(jax.jit(da.rgb_to_hsv)(rgb)), cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV))


def test_hsv_to_rgb_is_opencvs_vector_path_for_every_colour():
    """Rows 64 pixels wide: OpenCV's vector path covers them on any SIMD width (its scalar tail, which rounds, is empty)."""
    h, s, v = np.meshgrid(np.arange(180), np.arange(256), np.arange(256), indexing="ij")
    hsv = np.stack([h, s, v], -1).astype(np.uint8).reshape(-1, 64, 3)
    assert_close_to_opencv(np.asarray(jax.jit(da.hsv_to_rgb)(hsv.astype(np.int32))), cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB))


def assert_close_to_opencv(ours, want, fraction=1e-4):
    """Identical on CPUs; on GPUs XLA's fused multiply-adds move a few values (0.005 % of all HSV
    colours on an H200) by one level."""
    if jax.default_backend() == "cpu":
        np.testing.assert_array_equal(ours, want)
    else:
        diff = np.abs(ours.astype(int) - want)
        assert diff.max() <= 1 and (diff > 0).mean() <= fraction, (diff.max(), (diff > 0).mean())


RESIZES = [((45, 61), (100, 133)), ((300, 400), (171, 229)), ((64, 64), (32, 32)), ((37, 53), (37, 90)), ((40, 50), (40, 50)),
           ((7, 300), (2, 87))]


def test_resize_tables_reproduce_cv2_resize():
    """One batch of upscaling, downscaling, exactly 2x (OpenCV's area path), one axis only, identity
    and extreme ratios: every sample's resize bit-identical, its tables zero past its size."""
    rng = np.random.default_rng(0)
    length = max(max(size) for _, size in RESIZES) + 3
    shapes, sizes = np.array([s for s, _ in RESIZES]), np.array([z for _, z in RESIZES])
    rows, cols = da.linear_tables(shapes[:, 0], sizes[:, 0], length, clamp=False), da.linear_tables(shapes[:, 1], sizes[:, 1], length, clamp=True)
    nearest_rows, nearest_cols = da.nearest_tables(shapes[:, 0], sizes[:, 0], length), da.nearest_tables(shapes[:, 1], sizes[:, 1], length)
    for k, (shape, size) in enumerate(RESIZES):
        image = rng.integers(0, 256, (*shape, 3)).astype(np.uint8)
        labels = rng.integers(0, 150, shape).astype(np.uint8)
        out = np.asarray(da._resize_window(image, rows[k][:, : size[0]], cols[k][:, : size[1]]))
        want = cv2.resize(image, size[::-1], interpolation=cv2.INTER_LINEAR) if size != shape else image
        np.testing.assert_array_equal(out, want)
        nearest = labels[nearest_rows[k, : size[0], None], nearest_cols[k, None, : size[1]]]
        np.testing.assert_array_equal(nearest, cv2.resize(labels, size[::-1], interpolation=cv2.INTER_NEAREST))
        assert not rows[k][:, size[0] :].any() and not cols[k][:, size[1] :].any() and not nearest_cols[k, size[1] :].any()


def test_photometric_distortion_matches_the_reference_step_by_step():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (16, 64, 3)).astype(np.uint8)
    for k in range(9):  # each step alone, then all (contrast first and last)
        p = augment.NO_PHOTOMETRIC.copy()
        p[[0, 1, 3, 4, 5, 6, 7, 8]] = [k in (0, 8), 27.5, k in (1, 8), 1.37, k in (2, 8), 0.61, k in (3, 8), -13]
        p[2] = k in (4, 8)
        p[3] = p[3] or k == 4
        assert_close_to_opencv(np.asarray(jax.jit(da.photometric)(image, p)), augment.photometric_distortion(image, p), 1e-2)


def _segmentation_case(seed, shape=(60, 90), classes=5, block=10):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (*shape, 3)).astype(np.uint8)
    labels = np.kron(rng.integers(0, classes, (shape[0] // block, shape[1] // block)), np.ones((block, block), np.int64)).astype(np.int32)
    labels[rng.random(shape) < 0.05] = IGNORE_INDEX
    return image, labels


def _device_segmentation(image, labels, count, a, classes, canvas=(128, 128), seed=0):
    """``count`` draws for one image and the device's crops under them."""
    draws = augment.segmentation_draws([image.shape[:2]] * count, np.random.default_rng(seed), a)
    return draws, jax.jit(lambda b: da.segmentation_batch(b, a, classes))(_segmentation_inputs(image, labels, draws, a, canvas))


def test_segmentation_pipeline_matches_the_reference():
    """Same crops (sizes, cat_max_ratio choices, flips), identical labels; images identical except in
    OpenCV's HSV->RGB scalar tail (the last width mod 16/32/64 pixels of a row), within 3 levels
    there after the later steps."""
    image, labels = _segmentation_case(0)
    a = augment.Augment(crop=(48, 64), scale=(160, 64), ratio_range=(0.5, 2.0))
    draws, out = _device_segmentation(image, labels, 16, a, 5, seed=1)
    images, sizes, targets = (np.asarray(x) for x in out)
    for k in range(16):
        want_image, want_labels = augment.segmentation_crop(image, labels, draws.row(k), a)
        h, w = want_labels.shape
        assert tuple(sizes[k]) == (h, w)
        np.testing.assert_array_equal(targets[k, :h, :w], want_labels)
        assert (targets[k, h:] == IGNORE_INDEX).all() and (targets[k, :, w:] == IGNORE_INDEX).all() and not images[k, h:].any()
        vector = (w // 64) * 64
        assert_close_to_opencv(images[k, :h, :vector], want_image[:, :vector], 1e-2)
        assert np.abs(images[k, :h, :w].astype(int) - want_image).max() <= 3
    assert any(sizes[:, 0] < 48), "no sample smaller than the crop: padding untested"


@pytest.mark.parametrize("ratio", [0.75, 0.4])
def test_cat_max_ratio_picks_the_references_candidate(ratio):
    """A label map dominated by one class: the first candidates fail, and the device picks the same
    later one (or the unchecked last) as the reference, for every sample (ratios above 1/2 count
    the majority vote's class only, lower ones every class)."""
    rng = np.random.default_rng(5)
    labels = np.zeros((60, 80), np.int32)
    labels[rng.integers(0, 50):, rng.integers(0, 70):] = 1  # one corner of another class
    labels[:3, :3] = 2
    image = rng.integers(0, 256, (60, 80, 3)).astype(np.uint8)
    a = augment.Augment(crop=(20, 20), scale=(80, 60), ratio_range=(1.0, 1.0), photometric=False, cat_max_ratio=ratio)
    draws = augment.segmentation_draws([image.shape[:2]] * 24, np.random.default_rng(0), a)
    batch = _segmentation_inputs(image, labels, draws, a, (64, 128))
    window = np.minimum(batch["size"], 20)
    chosen = np.asarray(jax.jit(lambda b: da.choose_crops(b, window, a, 3))(batch))
    want = [augment.chosen_crop(labels, draws.row(k), a) for k in range(24)]
    np.testing.assert_array_equal(chosen, want)
    # at 0.4 this map fails every candidate; the hard windows below test that path's decisions
    assert (len(set(want)) > 2 and augment.CROP_TRIES in want and 0 in want) if ratio == 0.75 else set(want) == {augment.CROP_TRIES}, want


def _window(counts: dict[int, int], size=(8, 10), seed=0) -> np.ndarray:
    """An (8, 10) label window with these pixel counts per class (the rest IGNORE_INDEX), shuffled."""
    flat = np.full(size[0] * size[1], IGNORE_INDEX, np.uint8)
    flat[: sum(counts.values())] = np.repeat(list(counts), list(counts.values()))
    return np.random.default_rng(seed).permutation(flat).reshape(size)


HARD_WINDOWS = [{}, {3: 1}, {3: 80}, {3: 60, 4: 20}, {3: 59, 4: 21}, {3: 61, 4: 19}, {3: 30, 4: 30}, {3: 45, 4: 15},
                {3: 44, 4: 16}, {1: 20, 2: 20, 3: 20, 4: 20}, {0: 50, 1: 5, 2: 5, 3: 5, 4: 5}, {0: 3, 4: 1}, {0: 2, 4: 2},
                {1: 33, 2: 33, 3: 2}, {2: 40, 4: 39, 0: 1}]


@pytest.mark.parametrize("ratio", [0.75, 0.6, 0.51, 0.5, 0.3])
def test_crop_check_matches_the_reference_on_hard_windows(ratio):
    """Exact shares at the ratio (3/4 of 80 labelled pixels, of 60), ties, one class, nothing
    labelled, one pixel, many classes, in shuffled orders: the device's check is the reference's."""
    identity = lambda n: np.arange(n, dtype=np.int32)
    check = jax.jit(lambda w: da._crop_passes(w, identity(8), identity(10), np.zeros(2, np.int32), np.array([8, 10], np.int32),
                                              (8, 10), 5, ratio))
    for k, counts in enumerate(HARD_WINDOWS):
        for seed in range(3):
            window = _window(counts, seed=k * 3 + seed)
            assert bool(check(window)) == augment.crop_passes(window, ratio), (counts, ratio, seed)


@pytest.mark.parametrize("task", ["segmentation", "depth"])
def test_the_augmentation_has_no_data_dependent_control_flow(task):
    """No while loops or conds: on GPUs XLA reads their predicates back to the host, which would
    make every step wait for the device."""
    image, labels = _segmentation_case(2)
    a = augment.Augment(crop=(48, 64), scale=(160, 64))
    if task == "segmentation":
        draws = augment.segmentation_draws([image.shape[:2]] * 2, np.random.default_rng(0), a)
        jaxpr = jax.make_jaxpr(lambda b: da.segmentation_batch(b, a, 5))(_segmentation_inputs(image, labels, draws, a, (128, 128)))
    else:
        draws = augment.depth_draws([image.shape[:2]] * 2, np.random.default_rng(0), a)
        depth = labels.astype(np.float32) + 1
        jaxpr = jax.make_jaxpr(lambda b: da.depth_batch(b, a))(_depth_inputs(image, depth, draws, (128, 128)))
    primitives = _primitives(jaxpr.jaxpr)
    assert "gather" in primitives and not primitives & {"while", "cond", "scan"}, primitives


def test_depth_pipeline_matches_the_reference():
    """Crops, flips and colour draws identical; rotated images within 1 level (OpenCV 5 samples in
    floating point, float32 here), unrotated ones identical; depth identical."""
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (48, 64, 3)).astype(np.uint8)
    depth = rng.uniform(0.5, 5, (48, 64)).astype(np.float32)
    a = augment.Augment(crop=(40, 56), scale=(0, 0), rotate_prob=0.6)
    draws = augment.depth_draws([depth.shape] * 12, np.random.default_rng(0), a)
    batch = _depth_inputs(image, depth, draws, (64, 128))
    images, sizes, colour, depths = (np.asarray(x) for x in jax.jit(lambda b: da.depth_batch(b, a))(batch))
    for k in range(12):
        want_image, want_depth = augment.depth_crop(image, depth, draws.row(k), a)
        np.testing.assert_array_equal(depths[k], want_depth)
        np.testing.assert_array_equal(colour[k], draws.colour[k].astype(np.float32))
        diff = np.abs(images[k].astype(int) - want_image)
        assert diff.max() <= (1 if draws.rotate[k] else 0)
        assert diff.mean() < 1e-2
    assert 0 < draws.rotate.sum() < 12 and 0 < draws.flip.sum() < 12 and 0 < draws.colour[:, 0].sum() < 12


def test_depth_smaller_than_the_crop_pads_with_zeros():
    rng = np.random.default_rng(8)
    image, depth = rng.integers(0, 256, (20, 30, 3)).astype(np.uint8), rng.uniform(0.5, 5, (20, 30)).astype(np.float32)
    a = augment.Augment(crop=(32, 40), scale=(0, 0), rotate_prob=0.0)
    d = augment.depth_draws([depth.shape], np.random.default_rng(0), a)
    images, sizes, _, depths = jax.jit(lambda b: da.depth_batch(b, a))(_depth_inputs(image, depth, d, (128, 128)))
    assert tuple(sizes[0]) == (20, 30) and not np.asarray(depths)[0, 20:].any() and not np.asarray(images)[0, :, 30:].any()
    want_image, want_depth = augment.depth_crop(image, depth, d.row(0), a)
    np.testing.assert_array_equal(np.asarray(images)[0, :20, :30], want_image)


def test_bad_inputs_name_the_example():
    image, labels = _segmentation_case(1)
    with pytest.raises(ValueError, match="room_7.*canvas"):
        da.segmentation_arrays(image, labels, (32, 32), "room_7")
    with pytest.raises(ValueError, match="room_7.*do not pair"):
        da.segmentation_arrays(image, labels[:, :-4], (128, 128), "room_7")
    with pytest.raises(ValueError, match="room_7.*labels span"):
        da.segmentation_arrays(image, np.where(labels == 3, 300, labels), (128, 128), "room_7")
    assert da.canvas_for([(60, 90), (130, 20)]) == (256, 128) and da.canvas_for([(1, 1)], (600, 800)) == (600, 800)
