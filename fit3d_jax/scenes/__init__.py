"""Scenes: posed views and sparse points, read from the nerfstudio-style layout FiT3D uses for
ScanNet++ or from COLMAP models, and the built-in synthetic rooms (``scenes.synthetic``)."""

from fit3d_jax.scenes.loading import find_scenes, is_scene_dir, load_scene, verify_pixels
from fit3d_jax.scenes.pixels import read_depth, read_image, read_labels, read_mask
from fit3d_jax.scenes.types import SceneData, SceneError, View

__all__ = ["SceneData", "SceneError", "View", "find_scenes", "is_scene_dir", "load_scene", "read_depth", "read_image", "read_labels",
           "read_mask", "verify_pixels"]
