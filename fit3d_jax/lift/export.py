"""Stage I outputs: the standard 3DGS ``.ply`` (plus feature columns), view renders, and the
store entry stage II loads."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import jax.numpy as jnp
import numpy as np

from fit3d_jax.lift.gaussians import SH_REST, Gaussians
from fit3d_jax.viz import pca_rgb, side_by_side, to_uint8


def ply_properties(feature_dim: int) -> list[str]:
    """Vertex properties in the order 3DGS writes them (viewers rely on it), then the features."""
    return (
        ["x", "y", "z", "nx", "ny", "nz"]
        + [f"f_dc_{i}" for i in range(3)]
        + [f"f_rest_{i}" for i in range(3 * SH_REST)]
        + ["opacity"]
        + [f"scale_{i}" for i in range(3)]
        + [f"rot_{i}" for i in range(4)]
        + [f"feat_{i}" for i in range(feature_dim)]
    )


def write_ply(path: Path, gaussians: Gaussians, active: np.ndarray) -> Path:
    """Binary little-endian PLY of the active Gaussians: raw parameters as 3DGS stores them
    (log-scales, opacity logits, unnormalised quaternions; SH rest channel-major)."""
    keep = np.asarray(active, bool)
    g = {k: np.asarray(v)[keep] for k, v in vars(gaussians).items()}
    n = int(keep.sum())
    columns = [
        g["means"],
        np.zeros((n, 3), np.float32),  # normals: 3DGS writes zeros
        g["sh_dc"].reshape(n, 3),
        np.transpose(g["sh_rest"], (0, 2, 1)).reshape(n, 3 * SH_REST),  # (N, 3, 15) flattened
        g["opacity_logits"][:, None],
        g["log_scales"],
        g["quats"],
        g["features"],
    ]
    data = np.concatenate(columns, axis=1).astype("<f4")
    names = ply_properties(g["features"].shape[1])
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    header += [f"property float {name}" for name in names] + ["end_header"]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(data.tobytes())
    return path


def read_ply(path: Path) -> dict[str, np.ndarray]:
    """Reads a binary little-endian float PLY written by ``write_ply`` (property -> column)."""
    raw = Path(path).read_bytes()
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    lines = raw[:end].decode("ascii").splitlines()
    if lines[:2] != ["ply", "format binary_little_endian 1.0"]:
        raise ValueError(f"{path}: not a binary little-endian PLY")
    count = int(next(line for line in lines if line.startswith("element vertex")).split()[-1])
    names = [line.split()[-1] for line in lines if line.startswith("property float")]
    data = np.frombuffer(raw[end:], "<f4").reshape(count, len(names))
    return {name: data[:, i] for i, name in enumerate(names)}


def depth_colours(depth: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Expected depth as a colour map (near bright), black where nothing was rendered."""
    hit = alpha > 0.5
    if not hit.any():
        return np.zeros(depth.shape + (3,), np.uint8)
    lo, hi = np.percentile(depth[hit], [1, 99])
    scaled = 1.0 - np.clip((depth - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    colours = cv2.applyColorMap(to_uint8(scaled), cv2.COLORMAP_INFERNO)[..., ::-1]
    return np.where(hit[..., None], colours, 0).astype(np.uint8)


def view_panel(rgb, image, decoded, target, depth, alpha) -> np.ndarray:
    """render | ground truth | PCA(rendered features) | PCA(DINOv2 target) | depth. The two
    feature images share one PCA basis so their colours compare."""
    both = np.asarray(pca_rgb(jnp.concatenate([decoded, target], axis=1)))  # (H, 2W, D) stays on the device
    half = both.shape[1] // 2
    return side_by_side(
        [to_uint8(np.asarray(rgb)), to_uint8(np.asarray(image)), to_uint8(both[:, :half]), to_uint8(both[:, half:]),
         depth_colours(np.asarray(depth), np.asarray(alpha))]
    )


def write_store_entry(
    store_dir: Path, scene_name: str, gaussians: Gaussians, active, decoder_kernel, views: list[dict], test_views: list[dict],
    weights: dict,
) -> Path:
    """What stage II needs of a scene: the rendering parameters of the active Gaussians
    (activated), the decoder kernel (3, 3, F, D), the training views (its samples), the held-out
    views (its visualisations) and the weights whose features were lifted (``fingerprint`` and
    ``description``: stage II refuses other weights)."""
    keep = np.asarray(active, bool)
    quats = np.asarray(gaussians.quats)[keep]
    store_dir = Path(store_dir)
    store_dir.mkdir(parents=True, exist_ok=True)
    path = store_dir / f"{scene_name}.npz"
    tmp = store_dir / f"{scene_name}.tmp.npz"
    np.savez(
        tmp,
        means=np.asarray(gaussians.means)[keep],
        scales=np.exp(np.asarray(gaussians.log_scales)[keep]),
        quats=quats / np.linalg.norm(quats, axis=1, keepdims=True),
        opacities=1.0 / (1.0 + np.exp(-np.asarray(gaussians.opacity_logits)[keep])),
        features=np.asarray(gaussians.features)[keep],
        decoder=np.asarray(decoder_kernel),
    )
    tmp.rename(path)
    entry = {"scene": scene_name, "weights": weights, "views": views, "test_views": test_views}
    (store_dir / f"{scene_name}.json").write_text(json.dumps(entry, indent=1))
    return path
