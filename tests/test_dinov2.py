"""Flax DINOv2 against the reference PyTorch implementation of the official model.

Random HF models are written in the official, timm and HF formats (tests/dinov2_checkpoints.py),
loaded with fit3d_jax.weights, and compared with tests/torch_dinov2.py loaded strictly from the
official file. Error metric: max |error| / max |reference| over all outputs compared.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from dinov2_checkpoints import SMALL_VARIANTS, Variant, random_hf_model, random_params, write_all_formats, write_official
from fit3d_jax.models import dinov2
from fit3d_jax.models.dinov2 import DinoV2, ViTConfig
from fit3d_jax.weights import load_weights
from torch_dinov2 import DinoVisionTransformer

SIZES = [(224, 224), (238, 322)]
# Reference interpolation per library: (offset, antialias) without / with registers.
REFERENCE_INTERPOLATION = {
    "official": lambda regs: dict(interpolate_offset=0.0, interpolate_antialias=True) if regs else {},
    "timm": lambda regs: dict(interpolate_offset=0.0, interpolate_antialias=True),
    "hf": lambda regs: dict(interpolate_offset=0.0, interpolate_antialias=bool(regs)),
}
FILES_BY_FORMAT = {
    "official": ["official"],
    "timm": ["timm_safetensors", "timm_bin"],
    "hf": ["hf_dir", "hf_bin"],
}


def relative_error(got, expected) -> float:
    expected = np.asarray(expected, np.float64)
    return float(np.abs(np.asarray(got, np.float64) - expected).max() / np.abs(expected).max())


def images(size, batch=2, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, *size, 3)).astype(np.float32)


def reference(files, interpolation: str) -> DinoVisionTransformer:
    return reference_from(files.official, interpolation, files.registers)


def reference_from(official_pth, interpolation: str = "official", registers: int = 0) -> DinoVisionTransformer:
    sd = torch.load(official_pth, weights_only=True)
    return DinoVisionTransformer.from_state_dict(sd, **REFERENCE_INTERPOLATION[interpolation](registers))


def reference_features(ref: DinoVisionTransformer, x: np.ndarray) -> dict[str, np.ndarray]:
    with torch.no_grad():
        out = ref.forward_features(torch.from_numpy(x).permute(0, 3, 1, 2))
    return {k: v.numpy() for k, v in out.items()}


@pytest.fixture(scope="module", params=SMALL_VARIANTS, ids=lambda v: v.name)
def small_files(request, tmp_path_factory):
    return write_all_formats(random_hf_model(request.param), tmp_path_factory.mktemp(request.param.name))


def assert_matches_reference(loaded, ref, size, tol=1e-5):
    x = images(size)
    out = jax.jit(DinoV2(loaded.config).apply)({"params": loaded.params}, x)
    expected = reference_features(ref, x)
    h, w = size[0] // 14, size[1] // 14
    assert out.patch_tokens.shape == (2, h, w, loaded.config.embed_dim)
    assert relative_error(out.patch_tokens.reshape(2, h * w, -1), expected["x_norm_patchtokens"]) < tol
    assert relative_error(out.cls_token, expected["x_norm_clstoken"]) < tol
    assert out.register_tokens.shape == expected["x_norm_regtokens"].shape
    if loaded.config.num_register_tokens:
        assert relative_error(out.register_tokens, expected["x_norm_regtokens"]) < tol


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("fmt", FILES_BY_FORMAT)
def test_every_format_matches_reference(small_files, fmt, size):
    ref = reference(small_files, fmt)
    loaded = [load_weights(getattr(small_files, f), announce=False) for f in FILES_BY_FORMAT[fmt]]
    assert all(w.config.interpolation == fmt for w in loaded)  # format detected, its library's default
    for other in loaded[1:]:  # the same format from other files / key spellings: identical parameters
        jax.tree.map(np.testing.assert_array_equal, other.params, loaded[0].params)
    assert_matches_reference(loaded[0], ref, size)


def test_hf_and_official_files_give_identical_parameters(small_files):
    official = load_weights(small_files.official, announce=False).params
    hf = load_weights(small_files.hf_dir, announce=False).params
    jax.tree.map(np.testing.assert_array_equal, hf, official)


PLAIN, REGISTERS = SMALL_VARIANTS[0], SMALL_VARIANTS[1]


@pytest.mark.parametrize("small_files", [PLAIN], indirect=True, ids=lambda v: v.name)
def test_square_37x37_grid_uses_position_embeddings_as_stored(small_files):
    # The official model skips interpolation here; with the 0.1 offset, interpolating would not
    # be the identity, so this checks that the skip happens.
    assert_matches_reference(load_weights(small_files.official, announce=False), reference(small_files, "official"), (518, 518))


def test_full_vits14_matches_reference(tmp_path):
    official, _ = write_official(random_hf_model(Variant("vits14", depth=12)), tmp_path)
    loaded = load_weights(official, arch="vits14", announce=False)
    assert loaded.config.arch == "vits14"
    assert_matches_reference(loaded, reference_from(official), (238, 322))


@pytest.mark.parametrize("small_files", [REGISTERS], indirect=True, ids=lambda v: v.name)
@pytest.mark.parametrize(
    "n,reshape,return_class_token,norm",
    [(2, True, True, True), ((1, 0), False, False, True), (1, True, False, False)],
)
def test_intermediate_layers_match_reference(small_files, n, reshape, return_class_token, norm):
    loaded = load_weights(small_files.official, announce=False)
    x = images((238, 322), seed=1)
    kwargs = dict(n=n, reshape=reshape, return_class_token=return_class_token, norm=norm)
    apply = jax.jit(DinoV2(loaded.config).apply, static_argnames=("method", *kwargs))
    got = apply({"params": loaded.params}, x, method=DinoV2.get_intermediate_layers, **kwargs)
    with torch.no_grad():
        expected = reference(small_files, "official").get_intermediate_layers(
            torch.from_numpy(x).permute(0, 3, 1, 2), **kwargs
        )
    assert len(got) == len(expected) == (n if isinstance(n, int) else len(n))
    for g, e in zip(got, expected):
        g, e = (g, e) if return_class_token else ((g,), (e,))
        patches, e_patches = g[0], e[0].numpy()
        if reshape:  # ours NHWC, official NCHW
            e_patches = e_patches.transpose(0, 2, 3, 1)
        assert patches.shape == e_patches.shape
        assert relative_error(patches, e_patches) < 1e-5
        if return_class_token:
            assert relative_error(g[1], e[1].numpy()) < 1e-5


@pytest.fixture(scope="module")
def tiny():
    config = ViTConfig(embed_dim=384, depth=2, num_heads=6, num_register_tokens=4)
    return config, random_params(config, seed=3)


@pytest.mark.parametrize("shape", [(1, 230, 224, 3), (1, 224, 225, 3), (224, 224, 3), (1, 224, 224, 1)])
def test_rejects_bad_image_shapes_naming_them(tiny, shape):
    config, params = tiny
    with pytest.raises(ValueError, match=re.escape(str(shape))):
        jax.eval_shape(DinoV2(config).apply, {"params": params}, np.zeros(shape, np.float32))


def test_unknown_attention_is_an_error_naming_it(tiny):
    config, params = tiny
    with pytest.raises(ValueError, match=r"attention='flash': expected one of \['cudnn', 'fused', 'xla'\]"):
        jax.eval_shape(DinoV2(config, attention="flash").apply, {"params": params}, images((56, 70)))


def test_bfloat16_compute_is_close_to_float32_and_keeps_float32_params(tiny):
    config, params = tiny
    x = images((112, 154))
    f32 = jax.jit(DinoV2(config).apply)({"params": params}, x)
    bf16 = jax.jit(DinoV2(config, dtype=jnp.bfloat16).apply)({"params": params}, x)
    assert bf16.patch_tokens.dtype == jnp.float32
    assert relative_error(bf16.patch_tokens, f32.patch_tokens) < 2e-2
    init = jax.eval_shape(DinoV2(config, dtype=jnp.bfloat16).init, jax.random.key(0), x[:1])["params"]
    assert {leaf.dtype for leaf in jax.tree.leaves(init)} == {jnp.dtype(jnp.float32)}


@pytest.mark.parametrize("variant", [{"remat": True}, {"attention": "fused"}], ids=["remat", "fused_attention"])
def test_variant_gives_the_same_outputs_and_gradients(tiny, variant):
    """Recomputing blocks in the backward, or the fused FFI attention (its CPU build here),
    against the plain model with XLA attention."""
    config, params = tiny
    x = images((56, 70))

    def loss(p, variant):
        return jnp.mean(DinoV2(config, **dict(variant)).apply({"params": p}, x).patch_tokens ** 2)

    grad_fn = jax.jit(jax.value_and_grad(loss), static_argnums=1)
    (v0, g0), (v1, g1) = grad_fn(params, (("attention", "xla"),)), grad_fn(params, tuple(variant.items()))
    np.testing.assert_allclose(v1, v0, rtol=1e-6)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(g1), jax.tree.leaves(g0)):
        # <=: the unused mask token's gradient must stay exactly zero
        assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max(), jax.tree_util.keystr(path)


def test_masks_replace_patch_embeddings_by_mask_token(tiny):
    config, params = tiny
    params = jax.tree.map(np.asarray, params)
    params["mask_token"] = np.random.default_rng(0).standard_normal(params["mask_token"].shape).astype(np.float32)
    model, x = DinoV2(config), images((56, 70))
    fully_masked = model.apply({"params": params}, x, masks=np.ones((2, 4, 5), bool))
    # Equivalent: a patch projection that maps every patch to mask_token.
    constant = {**params, "patch_embed": {"proj": {
        "kernel": np.zeros_like(params["patch_embed"]["proj"]["kernel"]), "bias": params["mask_token"][0]}}}
    np.testing.assert_allclose(
        fully_masked.patch_tokens, model.apply({"params": constant}, x).patch_tokens, rtol=1e-5, atol=1e-5
    )
    unmasked = model.apply({"params": params}, x, masks=np.zeros((2, 4, 5), bool))
    np.testing.assert_array_equal(unmasked.patch_tokens, model.apply({"params": params}, x).patch_tokens)


def test_chunked_xla_attention_matches_full(monkeypatch):
    """Large score tensors are computed in query chunks; the result must not change."""
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(2, 300, 3, 16)), jnp.float32) for _ in range(3))
    full = jax.nn.dot_product_attention(q, k, v, implementation="xla")
    monkeypatch.setattr(dinov2, "ATTENTION_SCORES_BUDGET", 2 * 3 * 300 * 4 * 70)  # 70-query chunks
    np.testing.assert_allclose(dinov2.xla_attention(q, k, v), full, rtol=1e-5, atol=1e-6)
