"""Camera paths: a handheld scan's smooth loop around the room, clear of every surface."""

from __future__ import annotations

import math

import numpy as np

from fit3d_jax.scenes.synthetic.raycast import Renderer

CAMERA_CLEARANCE = 0.2  # metres between a camera centre and any surface


def _periodic_noise(rng: np.random.Generator, s: np.ndarray, amplitude: float, terms: int = 3) -> np.ndarray:
    """A smooth random function of s in [0, 1), periodic, of about ``amplitude``."""
    out = np.zeros_like(s)
    for _ in range(terms):
        out += rng.normal(0, amplitude / math.sqrt(terms)) * np.sin(2 * np.pi * rng.integers(1, 5) * s + rng.uniform(0, 2 * np.pi))
    return out


def _look(position: np.ndarray, yaw: float, pitch: float, roll: float) -> np.ndarray:
    """World-to-camera (OpenCV axes) for a camera at ``position`` looking along (yaw, pitch), z up."""
    forward = np.array([math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw), math.sin(pitch)])
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    c, s = math.cos(roll), math.sin(roll)
    right, down = c * right + s * down, -s * right + c * down
    w2c = np.eye(4)
    w2c[:3, :3] = np.stack([right, down, forward])
    w2c[:3, 3] = -w2c[:3, :3] @ position
    return w2c


def camera_path(rng: np.random.Generator, renderer: Renderer, count: int, tries: int = 20) -> list[np.ndarray]:
    """World-to-camera matrices along a loop around the room, every centre clear of all surfaces."""
    size = renderer.size
    for _ in range(tries):
        s = (np.arange(count) + rng.uniform(-0.25, 0.25, count)) / count
        angle = rng.uniform(0, 2 * np.pi) + rng.choice([-1, 1]) * 2 * np.pi * s
        semi_axes = np.maximum(size[:2] / 2 - rng.uniform(0.95, 1.3, 2), 0.25)
        x = size[0] / 2 + semi_axes[0] * np.cos(angle) + _periodic_noise(rng, s, 0.12) + rng.normal(0, 0.01, count)
        y = size[1] / 2 + semi_axes[1] * np.sin(angle) + _periodic_noise(rng, s, 0.12) + rng.normal(0, 0.01, count)
        z = np.clip(1.5 + _periodic_noise(rng, s, 0.12) + rng.normal(0, 0.01, count), 1.3, 1.7)
        centres = np.stack([x, y, z], -1)
        if (renderer.clearance(centres.astype(np.float32)) < CAMERA_CLEARANCE).any():
            continue
        towards_middle = np.arctan2(size[1] / 2 - y, size[0] / 2 - x)
        sweep = rng.uniform(0.6, 1.1) * np.sin(2 * np.pi * rng.integers(2, 4) * s + rng.uniform(0, 2 * np.pi))
        yaw = towards_middle + sweep + _periodic_noise(rng, s, 0.15) + rng.normal(0, 0.015, count)
        pitch = -0.22 + _periodic_noise(rng, s, 0.12) + rng.normal(0, 0.015, count)
        roll = _periodic_noise(rng, s, 0.03) + rng.normal(0, 0.01, count)
        return [_look(c, a, b, r) for c, a, b, r in zip(centres, yaw, pitch, roll)]
    raise RuntimeError(f"no camera path clear of the furniture after {tries} tries (a generator bug)")
