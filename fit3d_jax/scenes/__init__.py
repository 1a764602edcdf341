"""Scenes: posed views and sparse points, read from the nerfstudio-style layout FiT3D uses for
ScanNet++ or from COLMAP models, and the built-in synthetic rooms (``scenes.synthetic``)."""

from fit3d_jax.scenes.loading import is_scene_dir, load_scene, read_depth, read_image, read_labels, read_mask
from fit3d_jax.scenes.types import SceneData, SceneError, View

__all__ = ["View", "SceneData", "SceneError", "load_scene", "is_scene_dir", "read_image", "read_mask", "read_depth", "read_labels"]
