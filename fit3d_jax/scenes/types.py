"""What every scene format is read into: views (pinhole cameras, image paths) and sparse points."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from fit3d_jax.errors import FitError


class SceneError(FitError, ValueError):
    """A scene on disk is malformed; the message names the file and the field."""


@dataclasses.dataclass(frozen=True)
class View:
    """One posed image. Cameras follow OpenCV: x right, y down, looking down +z; pixel (row i,
    col j) has its centre at (j + 0.5, i + 0.5)."""

    name: str
    image_path: Path
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    world_to_camera: np.ndarray  # (4, 4) float64
    mask_path: Path | None = None  # nonzero = pixel counts in the losses
    depth_path: Path | None = None  # synthetic rooms: uint16 PNG, millimetres, 0 = no surface
    label_path: Path | None = None  # synthetic rooms: uint8 PNG of class ids (SceneData.classes)

    @property
    def camera_center(self) -> np.ndarray:
        rot, trans = self.world_to_camera[:3, :3], self.world_to_camera[:3, 3]
        return -rot.T @ trans


@dataclasses.dataclass(frozen=True)
class SceneData:
    name: str
    root: Path
    train: tuple[View, ...]
    test: tuple[View, ...]
    points: np.ndarray  # (P, 3) float64 sparse points (initialisation)
    point_colors: np.ndarray  # (P, 3) uint8
    classes: tuple[str, ...] | None = None  # label names by id, where labels exist
    notes: tuple[str, ...] = ()  # what the reader left out or changed, for the job to report
