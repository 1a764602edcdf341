"""On the GPU: random-weight timm DINOv2 ViTs, imported with fit3d_jax.weights, agree with timm.

574x868 images (41x62 tokens, so the position embeddings are interpolated, timm style).
float32 to 1e-4 and bfloat16 compute to 1e-2, relative to timm's float32 outputs (max |error|
over max |value|, over CLS and patch tokens).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

timm = pytest.importorskip("timm")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available() or jax.default_backend() != "gpu", reason="needs CUDA"),
]

from safetensors.torch import save_file  # noqa: E402

from fit3d_jax.models.dinov2 import DinoV2  # noqa: E402
from fit3d_jax.weights import load_weights  # noqa: E402


def random_timm(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, dynamic_img_size=True, num_classes=0)
    with torch.no_grad():  # timm starts LayerScale at 1e-5 and biases at 0: randomise them too
        for param_name, p in model.named_parameters():
            if param_name.endswith(".gamma"):
                p.uniform_(0.1, 0.5)
            elif param_name.endswith(".bias"):
                p.normal_(0.0, 0.02)
    return model.cuda().eval()


@pytest.mark.parametrize("name", ["vit_small_patch14_dinov2", "vit_base_patch14_dinov2"])
def test_timm_import_matches_timm(name, tmp_path):
    torch.backends.cuda.matmul.allow_tf32 = False  # the reference is true fp32
    torch.backends.cudnn.allow_tf32 = False
    model = random_timm(name)
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, path)
    weights = load_weights(path)
    assert weights.config.interpolation == "timm"

    x = np.random.default_rng(0).standard_normal((2, 574, 868, 3)).astype(np.float32)
    with torch.no_grad():
        expected = model.forward_features(torch.from_numpy(x).permute(0, 3, 1, 2).cuda()).cpu().numpy()

    for dtype, tol in ((jnp.float32, 1e-4), (jnp.bfloat16, 1e-2)):
        out = jax.jit(DinoV2(weights.config, dtype=dtype).apply)({"params": weights.params}, x)
        assert out.patch_tokens.shape == (2, 41, 62, expected.shape[-1])
        got = np.concatenate([out.cls_token[:, None], np.asarray(out.patch_tokens).reshape(2, 41 * 62, -1)], axis=1)
        error = np.abs(got - expected).max() / np.abs(expected).max()
        print(f"{name} {jnp.dtype(dtype).name}: relative error {error:.2e}")
        assert error < tol


@pytest.mark.parametrize("tokens", [2543, 2560])
def test_cudnn_attention_matches_xla_with_gradients(tokens):
    """cuDNN attention (unpadded in a plain call, padded to a multiple of 64 under
    differentiation) against XLA's in float32, bfloat16 inputs: output and all three gradients."""
    from fit3d_jax.models.dinov2 import cudnn_attention

    keys = jax.random.split(jax.random.key(tokens), 4)
    q, k, v, g = (jax.random.normal(key, (2, tokens, 6, 64), jnp.float32) for key in keys)
    lo = lambda x: x.astype(jnp.bfloat16)
    reference = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, implementation="xla")
    loss = lambda attention: lambda q, k, v: jnp.sum(attention(q, k, v).astype(jnp.float32) * g)
    rel = lambda a, b: float(jnp.abs(a.astype(jnp.float32) - b).max() / jnp.abs(b).max())

    error = rel(jax.jit(cudnn_attention)(lo(q), lo(k), lo(v)), reference(q, k, v))
    got = jax.jit(jax.grad(loss(cudnn_attention), argnums=(0, 1, 2)))(lo(q), lo(k), lo(v))
    expected = jax.grad(loss(reference), argnums=(0, 1, 2))(q, k, v)
    errors = {name: rel(a, b) for name, a, b in zip("qkv", got, expected)}
    print(f"{tokens} tokens: output {error:.1e}, gradients {errors}")
    assert error < 2e-2 and all(e < 3e-2 for e in errors.values())
