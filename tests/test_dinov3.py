"""DINOv3 ViT-S/16 and B/16 (RoPE, 4 storage tokens, the masked key bias) against transformers'
``DINOv3ViTModel`` with random weights: the HF layout and the official layout both load, agree with
it at a non-square size, and the official export round-trips bit-exactly. Two blocks, real widths."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import DINOv3ViTConfig, DINOv3ViTModel

import configs_loader
from fit3d_jax.jobs import convert_torch
from fit3d_jax.models.dinov2 import DinoV2, timm_config
from fit3d_jax.weights import WeightsError, dinov3, export_dinov3, load_weights, read_state_dict, write_state_dict


def _hf_model(width: int, heads: int, seed: int) -> DINOv3ViTModel:
    config = DINOv3ViTConfig(hidden_size=width, num_attention_heads=heads, intermediate_size=4 * width, num_hidden_layers=2,
                             num_register_tokens=4, patch_size=16, layerscale_value=1.0, layer_norm_eps=1e-5)
    torch.manual_seed(seed)
    model = DINOv3ViTModel(config).eval()
    with torch.no_grad():  # every parameter random, the layer scales and norms included; matrices ~ 1/sqrt(fan in)
        for name, p in model.named_parameters():
            scale = 1 / np.sqrt(np.prod(p.shape[1:])) if p.ndim > 1 and "token" not in name else 0.2
            p.copy_((1.0 if name.endswith(("norm1.weight", "norm2.weight", "norm.weight")) else 0.0) + scale * torch.randn(p.shape))
    return model


@pytest.fixture(scope="module", params=[("dinov3_vits16", 384, 6), ("dinov3_vitb16", 768, 12)], ids=["S", "B"])
def hf(request, tmp_path_factory):
    name, width, heads = request.param
    model = _hf_model(width, heads, seed=width)
    folder = tmp_path_factory.mktemp(name)
    model.save_pretrained(folder)  # config.json + model.safetensors, as the hub has them
    return name, model, folder


def _reference(model: DINOv3ViTModel, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(pixel_values=torch.from_numpy(images).permute(0, 3, 1, 2)).last_hidden_state.numpy()


def _ours(weights, images: np.ndarray) -> np.ndarray:
    out = jax.jit(lambda p, x: DinoV2(weights.config).apply({"params": p}, x))(weights.params, jnp.asarray(images))
    batch, width = images.shape[0], out.cls_token.shape[-1]
    return np.concatenate([out.cls_token[:, None], out.register_tokens, out.patch_tokens.reshape(batch, -1, width)], axis=1)


def test_the_hf_directory_loads_and_matches_transformers(hf):
    name, model, folder = hf
    weights = load_weights(str(folder))
    assert weights.config == timm_config(name, depth=2)
    assert weights.config.rope and not weights.config.key_bias and weights.config.num_register_tokens == 4
    images = np.random.default_rng(3).normal(size=(2, 7 * 16, 11 * 16, 3)).astype(np.float32)  # a 7x11 grid
    want, got = _reference(model, images), _ours(weights, images)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_the_official_layout_masks_the_key_bias_and_round_trips(hf, tmp_path):
    name, model, folder = hf
    weights = load_weights(str(folder), announce=False)
    official = read_state_dict(export_dinov3(weights.params, weights.config, tmp_path / "official.pth"))
    width = weights.config.embed_dim
    assert official["storage_tokens"].shape == (1, 4, width) and "pos_embed" not in official
    np.testing.assert_array_equal(official["blocks.0.attn.qkv.bias_mask"][width : 2 * width], 0)
    # A trained checkpoint's key bias is not zero, only masked: it must change nothing.
    keyed = dict(official)
    for block in range(2):
        bias = keyed[f"blocks.{block}.attn.qkv.bias"].copy()
        bias[width : 2 * width] = np.random.default_rng(block).normal(size=width)
        keyed[f"blocks.{block}.attn.qkv.bias"] = bias
    write_state_dict(keyed, tmp_path / "keyed.pth")
    loaded = load_weights(str(tmp_path / "keyed.pth"))
    assert loaded.config == weights.config
    images = np.random.default_rng(4).normal(size=(1, 5 * 16, 9 * 16, 3)).astype(np.float32)
    np.testing.assert_allclose(_ours(loaded, images), _reference(model, images), rtol=0, atol=1e-5 * np.abs(_reference(model, images)).max())
    back = read_state_dict(export_dinov3(loaded.params, loaded.config, tmp_path / "again.pth"))
    assert sorted(back) == sorted(keyed)
    for key, value in keyed.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_dinov3_errors_name_the_key(hf, tmp_path):
    name, _, folder = hf
    weights = load_weights(str(folder), announce=False)
    official = read_state_dict(export_dinov3(weights.params, weights.config, tmp_path / "o.pth"))
    bad_mask = dict(official, **{"blocks.1.attn.qkv.bias_mask": np.ones_like(official["blocks.1.attn.qkv.bias_mask"])})
    with pytest.raises(WeightsError, match=r"'blocks.1.attn.qkv.bias_mask' does not mask exactly the key bias"):
        dinov3.to_hub(bad_mask, "o.pth")
    periods = dict(official, **{"rope_embed.periods": official["rope_embed.periods"] * 2})
    with pytest.raises(WeightsError, match=r"'rope_embed.periods' is not the RoPE periods of base 100"):
        dinov3.to_hub(periods, "o.pth")
    missing = {k: v for k, v in official.items() if k != "blocks.1.norm2.weight"}
    write_state_dict(missing, tmp_path / "missing.pth")
    with pytest.raises(WeightsError, match=r"missing key 'blocks.1.norm2.weight'"):
        load_weights(str(tmp_path / "missing.pth"))


def test_convert_torch_writes_the_official_dinov3_layout(hf, tmp_path, capsys):
    name, _, folder = hf
    convert_torch.run(configs_loader.with_fields("convert_torch.py", checkpoint=str(folder), output=str(tmp_path / "dinov3.pth")))
    assert "official DINOv3 state dict" in capsys.readouterr().out
    assert "rope_embed.periods" in read_state_dict(tmp_path / "dinov3.pth")
