"""Stage II on CPU: two tiny lifted rooms and a tiny ViT. The loss falls, a killed run resumes to
the same parameters, the exported .pth matches a PyTorch DINOv2, bad stores are clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from fit3d_jax.finetune import data, store, targets, train
from fit3d_jax.lift import fit
from fit3d_jax.lift import trainer as lift_trainer
from fit3d_jax.models.dinov2 import DinoV2, ViTConfig, init_params
from fit3d_jax.prefetch import Prefetcher
from fit3d_jax.render.random_scene import front_camera, random_scene
from fit3d_jax.scenes import SceneError, load_scene
from fit3d_jax.scenes.synthetic import generate_room
from fit3d_jax.weights import export_official, load_params, load_weights, save_params
from torch_dinov2 import DinoVisionTransformer

REPO = Path(__file__).resolve().parent.parent
CONFIG = ViTConfig(embed_dim=64, depth=2, num_heads=1)  # 64-wide heads, like every DINOv2


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    path = tmp_path_factory.mktemp("vit") / "tiny"
    save_params(path, init_params(CONFIG, seed=1), CONFIG)
    return path


@pytest.fixture(scope="module")
def lifted(tmp_path_factory, vit):
    """A store of two tiny lifted rooms."""
    root = tmp_path_factory.mktemp("lift")
    weights = load_weights(str(vit), announce=False)
    recipe = lift_trainer.Recipe(iterations=15, feature_dim=8, lr_features=1e-2)
    for seed in (3, 4):
        room = generate_room(root / "rooms" / f"room_{seed}", seed=seed, width=64, height=48, num_train=5, num_test=1)
        fit.fit_scene(load_scene(room), weights, recipe, root / "out", progress=False)
    return root / "out" / "store"


def _finetune(store_dir, vit, out, **kw):
    params, config = load_params(vit)
    recipe = train.Recipe(learning_rate=kw.pop("learning_rate", 1e-3), epochs=8)  # 5 steps per epoch here
    return train.finetune(store.load_store(store_dir), params, config, recipe, out, dtype=jnp.float32, progress=False, **kw)


def test_store_round_trip(lifted):
    scenes = store.load_store(lifted)
    assert [s.name for s in scenes] == ["room_3", "room_4"]
    for s in scenes:
        assert len(s.views) == 5 and len(s.test_views) == 1 and s.target_dim == 64
        np.testing.assert_allclose(np.linalg.norm(s.quats, axis=1), 1.0, rtol=1e-5)
        assert np.all((s.opacities > 0) & (s.opacities < 1)) and np.all(s.scales > 0)


def test_sampler_covers_every_view_once_per_epoch():
    scenes = store_like(views=[3, 4])
    sampler = data.Sampler(scenes, batch_size=2, seed=5)
    assert sampler.steps_per_epoch == 3
    seen = [(s.scene, s.view) for step in range(3) for s in sampler.batch(step)]
    assert len(set(seen)) == 6  # 7 views, 3 batches of 2: one left out this epoch, none twice
    assert [s.flip for s in sampler.batch(0)] == [s.flip for s in sampler.batch(0)]
    assert seen != [(s.scene, s.view) for step in range(3, 6) for s in sampler.batch(step)]


def test_batches_carry_uint8_images_flipped_as_sampled(lifted):
    """The host sends uint8 (the step normalises on the device); a flipped sample's image is the
    mirrored resize of its photograph."""
    import cv2

    from fit3d_jax.images import load_image

    scenes = store.load_store(lifted)
    _, model_size, grid = data.image_size(scenes, CONFIG.patch_size)
    make = data.BatchMaker(scenes, data.Sampler(scenes, 2, seed=0, flip_probability=1.0), model_size, grid, workers=2)
    batch = make(0)
    make.close()
    assert batch.images.dtype == np.uint8 and batch.images.shape == (2, *model_size, 3)
    for image, sample in zip(batch.images, batch.samples):
        assert sample.flip
        photo = load_image(scenes[sample.scene].views[sample.view].image)
        np.testing.assert_array_equal(image, cv2.resize(photo, model_size[::-1], interpolation=cv2.INTER_AREA)[:, ::-1])


def store_like(views):
    fake_view = store.StoredView(Path("x.png"), None, 8, 8, (1, 1, 1, 1), np.eye(4))
    return [store.StoredScene(f"s{i}", *(np.zeros(1) for _ in range(6)), views=(fake_view,) * n) for i, n in enumerate(views)]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["ffi", "jax"])
def test_batched_targets_equal_single_view_renders(backend):
    """A device's rows render in one program per padded scene size (here 4096 and 8192 slots, a
    scene twice, flips; vmapped on the kernels): the targets equal one render per view, in row order."""
    width, height, grid = 48, 32, (2, 3)
    camera = front_camera(width, height, focal=30.0)
    rng = np.random.default_rng(0)
    stored = []
    for i, n in enumerate((300, 5000, 200)):
        g = random_scene(n, camera, channels=4, seed=i, scale=0.05)
        turned = np.eye(4)
        turned[[0, 0, 2, 2], [0, 2, 0, 2]] = np.cos(0.1), np.sin(0.1), -np.sin(0.1), np.cos(0.1)
        views = tuple(store.StoredView(Path("unused.png"), None, width, height, (30.0, 30.0, 24.0, 16.0), m)
                      for m in (np.eye(4), turned))
        stored.append(store.StoredScene(f"s{i}", g.means, g.scales, g.quats, g.opacities, g.features,
                                        rng.normal(size=(3, 3, 4, 5)).astype(np.float32), views))
    cache = targets.SceneCache(stored, jax.devices()[0], 1e9)
    samples = [data.Sample(0, 0, False), data.Sample(1, 0, True), data.Sample(2, 1, True), data.Sample(0, 0, True)]
    batched = targets.render_samples(cache, samples, (height, width), grid, backend)
    assert batched.shape == (4, *grid, 5)
    one = jax.jit(targets.render_target, static_argnums=(4, 5, 6, 7))
    for i, s in enumerate(samples):
        viewmat, intrinsics = targets.view_camera(stored[s.scene].views[s.view])
        alone = one(cache.get(s.scene), viewmat, intrinsics, s.flip, width, height, grid, backend)
        assert np.abs(np.asarray(alone)).max() > 0.1
        np.testing.assert_allclose(batched[i], alone, rtol=1e-5, atol=1e-6, err_msg=f"row {i}")
    assert np.abs(np.asarray(batched[0] - batched[3])).max() > 0  # the flip is applied per row


def test_token_l1_weights_tokens():
    rng = np.random.default_rng(0)
    tokens, target = rng.normal(size=(2, 2, 3, 4, 5))
    weights = np.zeros((2, 3, 4))
    weights[:, 1] = 1.0
    expected = np.abs(tokens - target).mean(-1)[:, 1].mean()
    assert float(train.token_l1(tokens, target, weights)) == pytest.approx(expected, rel=1e-5)


def test_tiny_finetune_lowers_the_loss(lifted, vit, tmp_path):
    _, summary = _finetune(lifted, vit, tmp_path, max_steps=40, log_every=1)
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    first = np.mean([r["loss"] for r in log[:8]])
    last = np.mean([r["loss"] for r in log[-8:]])
    assert last < 0.9 * first, (first, last)
    assert summary["steps"] == 40 and summary["views_per_second"] > 0


def test_killed_run_resumes_to_the_same_parameters(lifted, vit, tmp_path, monkeypatch):
    straight, _ = _finetune(lifted, vit, tmp_path / "a", max_steps=10, checkpoint_every=4)
    real = Prefetcher.next

    def killed(self):
        batch = real(self)
        if batch.step == 6:
            raise KeyboardInterrupt("simulated kill")
        return batch

    monkeypatch.setattr(Prefetcher, "next", killed)
    with pytest.raises(KeyboardInterrupt):
        _finetune(lifted, vit, tmp_path / "b", max_steps=10, checkpoint_every=4)  # checkpoint at 4
    monkeypatch.setattr(Prefetcher, "next", real)
    resumed, _ = _finetune(lifted, vit, tmp_path / "b", max_steps=10, checkpoint_every=4)
    for a, b in zip(jax.tree.leaves(straight.params), jax.tree.leaves(resumed.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_finetune_leaves_the_callers_parameters_intact(lifted, vit, tmp_path):
    params, config = load_params(vit)
    params = jax.device_put(params)  # device arrays, which a donating step could otherwise consume
    before = [np.asarray(x).copy() for x in jax.tree.leaves(params)]
    train.finetune(store.load_store(lifted), params, config, train.Recipe(learning_rate=1e-3), tmp_path, dtype=jnp.float32,
                   progress=False, max_steps=2)
    for a, b in zip(before, jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, np.asarray(b))


@pytest.mark.slow
def test_exported_pth_loads_strictly_and_matches(lifted, vit, tmp_path):
    _finetune(lifted, vit, tmp_path, max_steps=3)
    params, config = load_params(tmp_path / "checkpoints")  # the latest fine-tuning step
    pth = export_official(params, tmp_path / "tuned.pth")
    ref = DinoVisionTransformer.from_state_dict(torch.load(pth, weights_only=True))  # strict keys
    x = np.random.default_rng(0).standard_normal((1, 42, 56, 3)).astype(np.float32)
    with torch.no_grad():
        expected = ref.forward_features(torch.from_numpy(x).permute(0, 3, 1, 2))["x_norm_patchtokens"].numpy()
    got = np.asarray(DinoV2(config).apply({"params": params}, x).patch_tokens).reshape(expected.shape)
    assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-5
    original, _ = load_params(vit)
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(original)))


def test_bad_stores_name_the_file(lifted, tmp_path):
    with pytest.raises(SceneError, match="no such store"):
        store.load_store(tmp_path / "missing")
    broken = tmp_path / "store"
    broken.mkdir()
    (broken / "a.npz").write_bytes((lifted / "room_3.npz").read_bytes())
    with pytest.raises(SceneError, match=r"a\.json: missing"):
        store.load_store(broken)
    (broken / "a.json").write_text("{not json")
    with pytest.raises(SceneError, match=r"a\.json: malformed"):
        store.load_store(broken)


@pytest.mark.slow
def test_finetune_job_from_the_command_line(lifted, vit, tmp_path):
    cmd = [
        sys.executable, "-m", "fit3d_jax.main", "--config=configs/finetune.py", f"--config.store={lifted}",
        f"--config.output_dir={tmp_path}", f"--config.weights={vit}", "--config.max_steps=3", "--config.progress=False",
        "--config.dtype=float32", "--config.num_clusters=3",
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "configs/convert_torch.py" in proc.stdout
    assert len(list((tmp_path / "compare").glob("*.png"))) == 2  # one held-out view per room
    bad = subprocess.run(cmd[:-3] + ["--config.recipe.batch_size=0"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "config.recipe.batch_size" in bad.stderr + bad.stdout


MESH_STEP = """
import sys
import jax, jax.flatten_util, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from fit3d_jax.finetune import train
from fit3d_jax.models.dinov2 import DinoV2, ViTConfig, init_params

config = ViTConfig(embed_dim=64, depth=2, num_heads=1)
params = init_params(config, seed=1)
rng = np.random.default_rng(0)
images = rng.integers(0, 256, size=(4, 28, 42, 3), dtype=np.uint8)
target = rng.normal(size=(4, 2, 3, 64)).astype(np.float32)
weights = rng.uniform(size=(4, 2, 3)).astype(np.float32)  # unequal per device: the global divisor matters
recipe = train.Recipe(learning_rate=1e-3)
out = {}
for devices, reduce in ((1, "float32"), (2, "float32"), (2, "bfloat16")):
    mesh = Mesh(np.asarray(jax.devices()[:devices]), ("data",))
    model = DinoV2(config, dtype=jnp.float32)
    step = train.make_train_step(model, mesh, reduce_dtype=jnp.dtype(reduce))
    own = jax.tree.map(jnp.array, params)
    state = jax.device_put(train.initial_state(model, own, recipe), NamedSharding(mesh, P()))
    batch = [jax.device_put(x, NamedSharding(mesh, P("data"))) for x in (images, target, weights)]
    state, metrics = step(state, *batch)
    mu = jax.flatten_util.ravel_pytree(params)[1](state.opt_state[1][0].mu)  # the optimiser's flat vector, per tensor
    out[f"{devices}_{reduce}"] = dict(metrics, **{"/".join(map(str, k)): v for k, v in jax.tree_util.tree_leaves_with_path(mu)})
np.savez(sys.argv[1], **{f"{run}|{k}": np.asarray(v) for run, d in out.items() for k, v in d.items()})
"""


@pytest.mark.slow
def test_data_parallel_step_matches_one_device(tmp_path):
    """Over a 2-device mesh (CPU devices) the explicit gradient sum gives the loss, gradient norm
    and Adam moments one device gives for the same global batch; summing in bfloat16 stays within
    bfloat16 rounding of it."""
    import os

    path = tmp_path / "runs.npz"
    env = os.environ | {"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, "-c", MESH_STEP, str(path)], check=True, env=env, cwd=REPO)
    runs = np.load(path)
    keys = [k.split("|", 1)[1] for k in runs.files if k.startswith("1_float32|")]
    assert "loss" in keys and "grad_norm" in keys and len(keys) > 10
    for k in keys:
        one, two, two_bf16 = (runs[f"{run}|{k}"] for run in ("1_float32", "2_float32", "2_bfloat16"))
        scale = np.abs(one).max() + 1e-30
        assert np.abs(two - one).max() <= 1e-5 * scale, k
        assert np.abs(two_bf16 - one).max() <= 2 ** -7 * scale, k
        if one.size >= 1 << 16:  # the large tensors are the ones summed in bfloat16
            assert not np.array_equal(two_bf16, two), k


@pytest.mark.slow
def test_finetune_writes_tensorboard_events_and_jsonl(lifted, vit, tmp_path):
    from test_harness import read_events

    _finetune(lifted, vit, tmp_path, max_steps=6, log_every=3)
    rows = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6] and all("loss" in r and "grad_norm" in r for r in rows)
    assert {(step, tag) for step, tag, _ in read_events(tmp_path)} >= {(3, "loss"), (6, "loss"), (6, "grad_norm")}
