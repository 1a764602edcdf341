"""Probe ground truth from a ScanNet++ scan: depth and top-100 semantic labels for any pinhole view,
by ray casting ``mesh_aligned_0.05.ply`` (Embree, through embreex).

The labels follow the toolkit (common/utils/anno.py, ``load_annotation`` and ``get_sem_ids_on_2d``;
semantic/prep/semantics_2d.py, ``get_vtx_prop_on_2d``):

- ``segments_anno.json`` segGroups carry a ``label`` and ``segments``, which are vertex ids (ScanNet++'s
  ``segments.json`` has one segment per vertex: ``segIndices`` holds a value per mesh vertex);
- a vertex gets the ``objectId`` of the last group listing it; object ids <= 0 are no object;
- an object's class is its label's index in ``top100.txt`` (other labels: none);
- a pixel takes the class of the hit triangle's first vertex.

Here the class is written as index + 1 with 0 = none (FiT3D's annotations, read with mmseg's
``reduce_zero_label``). Depth is camera-space z in metres, 0 where the ray hits nothing or beyond
``max_depth``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fit3d_jax.scenes.types import SceneError, View

MAX_DEPTH = 20.0  # metres: FiT3D's ScanNet++ depth range (and the toolkit's far plane)


def _json(path: Path, what: str):
    if not path.is_file():
        raise SceneError(f"{path}: missing ({what})")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SceneError(f"{path}: malformed JSON ({e})") from None


def read_mesh(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (V, 3) float32 and triangles (F, 3) int64 of a PLY mesh."""
    import plyfile

    if not path.is_file():
        raise SceneError(f"{path}: missing (the scan's mesh, which the probe ground truth is rendered from)")
    try:
        ply = plyfile.PlyData.read(str(path))
        vertex = ply["vertex"]
        vertices = np.stack([np.asarray(vertex[a], np.float32) for a in "xyz"], -1)
        faces = ply["face"]
        key = "vertex_indices" if "vertex_indices" in faces.data.dtype.names else "vertex_index"
        triangles = np.stack([np.asarray(f, np.int64) for f in faces[key]]) if len(faces.data) else np.zeros((0, 3), np.int64)
    except (KeyError, ValueError, plyfile.PlyParseError) as e:
        raise SceneError(f"{path}: not a triangle mesh with x, y, z vertices and vertex_indices faces ({e})") from None
    if triangles.ndim != 2 or triangles.shape[1] != 3:
        raise SceneError(f"{path}: faces must be triangles, got {triangles.shape[1:]} vertices per face")
    if len(triangles) == 0 or triangles.min() < 0 or triangles.max() >= len(vertices):
        raise SceneError(f"{path}: no faces, or face vertex ids outside 0..{len(vertices) - 1}")
    if not np.isfinite(vertices).all():
        raise SceneError(f"{path}: non-finite vertex positions")
    return vertices, triangles


def vertex_classes(segments_path: Path, annotations_path: Path, num_vertices: int, classes: tuple[str, ...]) -> np.ndarray:
    """(V,) uint8: 1 + the top-100 index of each vertex's object label, 0 where none."""
    segments = _json(segments_path, "the mesh's segments; without them the mesh has no labels")
    indices = segments.get("segIndices") if isinstance(segments, dict) else None
    if not isinstance(indices, list):
        raise SceneError(f"{segments_path}: no 'segIndices' list")
    if len(indices) != num_vertices:
        raise SceneError(f"{segments_path}: segIndices has {len(indices)} entries but the mesh has {num_vertices} vertices "
                         "(segments and mesh of different scans?)")
    annotations = _json(annotations_path, "the mesh's object annotations")
    groups = annotations.get("segGroups") if isinstance(annotations, dict) else None
    if not isinstance(groups, list):
        raise SceneError(f"{annotations_path}: no 'segGroups' list")
    vertex_object = np.zeros(num_vertices, np.int64)
    labels = {}
    for i, group in enumerate(groups):
        where = f"{annotations_path}: segGroups[{i}]"
        try:
            object_id, label, members = int(group["objectId"]), group["label"], np.asarray(group["segments"], np.int64)
        except (KeyError, TypeError, ValueError):
            raise SceneError(f"{where}: needs objectId, label and segments (vertex ids)") from None
        if members.size and (members.min() < 0 or members.max() >= num_vertices):
            raise SceneError(f"{where}: segments name vertices outside 0..{num_vertices - 1}")
        vertex_object[members] = object_id
        labels[object_id] = label
    index = {name: k for k, name in enumerate(classes)}
    lookup = {o: index[label] + 1 for o, label in labels.items() if o > 0 and label in index}
    ids, inverse = np.unique(vertex_object, return_inverse=True)
    return np.array([lookup.get(int(o), 0) for o in ids], np.uint8)[inverse]


class MeshTruth:
    """A scan's mesh and labels, ready to cast views' rays against."""

    def __init__(self, scans: Path, classes: tuple[str, ...]):
        try:
            from embreex import mesh_construction, rtcore_scene
        except ImportError:
            raise SceneError("rendering probe ground truth needs embreex: pip install 'fit3d_jax[scannetpp]'") from None
        vertices, self.triangles = read_mesh(scans / "mesh_aligned_0.05.ply")
        self.classes = vertex_classes(scans / "segments.json", scans / "segments_anno.json", len(vertices), classes)
        self.scene = rtcore_scene.EmbreeScene()
        mesh_construction.TriangleMesh(self.scene, vertices[self.triangles].astype(np.float32))

    def render(self, view: View, max_depth: float = MAX_DEPTH) -> tuple[np.ndarray, np.ndarray]:
        """(H, W) float32 depth (camera z, metres; 0 = none) and (H, W) uint8 classes (0 = none),
        for rays through the pixel centres (+0.5)."""
        xs = (np.arange(view.width) + 0.5 - view.cx) / view.fx
        ys = (np.arange(view.height) + 0.5 - view.cy) / view.fy
        camera = np.stack([*np.broadcast_arrays(xs[None, :], ys[:, None]), np.ones((view.height, view.width))], -1)
        # Directions with camera z = 1, so that the distance Embree reports is the depth.
        directions = (camera.reshape(-1, 3) @ view.world_to_camera[:3, :3]).astype(np.float32)
        origins = np.broadcast_to(view.camera_center.astype(np.float32), directions.shape).copy()
        hit = self.scene.run(origins, directions, output=1)
        face, depth = hit["primID"], hit["tfar"]
        valid = (face >= 0) & (depth <= max_depth)
        classes = np.where(valid, self.classes[self.triangles[np.maximum(face, 0), 0]], 0).astype(np.uint8)
        depth = np.where(valid, depth, 0).astype(np.float32)
        return depth.reshape(view.height, view.width), classes.reshape(view.height, view.width)
