"""Room materials: patches of scikit-image's photographs as mip-mapped textures."""

from __future__ import annotations

import colorsys
import functools

import cv2
import numpy as np
import skimage.data

TEXTURE_SIZE = 256  # texels per side of every texture (mip level 0)


PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "motorcycle")
GREY_TEXTURES = ("brick", "grass", "gravel", "moon", "cell", "coins", "camera")


@functools.cache
def _photograph(name: str) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1]; grey images are contrast-stretched (they are tinted later)."""
    image = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
    image = image.astype(np.float32) / 255.0
    if image.ndim == 2:
        lo, hi = np.percentile(image, [2, 98])
        image = np.repeat(np.clip((image - lo) / max(hi - lo, 1e-3), 0, 1)[..., None], 3, axis=-1)
    return image


def _crop(rng: np.random.Generator, image: np.ndarray, fraction: tuple[float, float]) -> np.ndarray:
    h, w = image.shape[:2]
    side = max(16, int(min(h, w) * rng.uniform(*fraction)))
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    return cv2.resize(image[y:y + side, x:x + side], (TEXTURE_SIZE, TEXTURE_SIZE), interpolation=cv2.INTER_AREA)


def colour(rng: np.random.Generator, saturation: tuple[float, float], value: tuple[float, float]) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(*saturation), rng.uniform(*value)), np.float32)


class Palette:
    """The room's materials: a texture (mip pyramid) each, how it maps onto faces, and whether it glows."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.textures: list[np.ndarray] = []
        self.tile: list[float] = []  # metres per texture repeat; 0 = stretched once over the face
        self.offset: list[tuple[float, float]] = []
        self.emissive: list[bool] = []

    def _add(self, texture: np.ndarray, tile: float, emissive: bool = False) -> int:
        self.textures.append(np.clip(texture * 255 + 0.5, 0, 255).astype(np.uint8))
        self.tile.append(tile)
        self.offset.append(tuple(self.rng.uniform(0, 1, 2)))
        self.emissive.append(emissive)
        return len(self.textures) - 1

    def tinted(self, sources, tint, contrast: tuple[float, float], tile: tuple[float, float]) -> int:
        """A grey texture coloured by ``tint``: plaster, carpet, stone, fabric, cardboard."""
        grey = _crop(self.rng, _photograph(self.rng.choice(sources)), (0.3, 0.7))
        c = self.rng.uniform(*contrast)
        return self._add(tint * (1 - c + c * grey), self.rng.uniform(*tile))

    def photo_patch(self, tint, mix: tuple[float, float], tile: tuple[float, float]) -> int:
        """A patch of a colour photograph blended towards ``tint``: varnished, printed, painted things."""
        patch = _crop(self.rng, _photograph(self.rng.choice(PHOTOS)), (0.15, 0.45))
        m = self.rng.uniform(*mix)
        return self._add((1 - m) * patch + m * tint, self.rng.uniform(*tile))

    def picture(self) -> tuple[int, float]:
        """A whole photograph stretched over a canvas; returns (material, height / width)."""
        image = _photograph(self.rng.choice(PHOTOS))
        texture = cv2.resize(image, (TEXTURE_SIZE, TEXTURE_SIZE), interpolation=cv2.INTER_AREA)
        return self._add(texture, 0.0), image.shape[0] / image.shape[1]

    def glow(self) -> int:
        warm = np.array([1.0, 0.95, 0.82], np.float32) * self.rng.uniform(0.9, 1.0)
        return self._add(np.broadcast_to(warm, (TEXTURE_SIZE, TEXTURE_SIZE, 3)), 1.0, emissive=True)

    def wood(self) -> int:
        return self.photo_patch(colour(self.rng, (0.3, 0.7), (0.25, 0.7)), (0.3, 0.6), (0.4, 0.9))

    def fabric(self) -> int:
        return self.tinted(GREY_TEXTURES, colour(self.rng, (0.2, 0.8), (0.35, 0.9)), (0.3, 0.7), (0.25, 0.6))

    def metal(self) -> int:
        return self.tinted(("coins", "camera", "moon"), colour(self.rng, (0.0, 0.1), (0.3, 0.8)), (0.2, 0.5), (0.3, 0.6))

    def cardboard(self) -> int:
        return self.tinted(("gravel", "cell", "grass"), colour(self.rng, (0.35, 0.55), (0.55, 0.8)), (0.2, 0.45), (0.3, 0.7))

    def mip_atlases(self) -> list[np.ndarray]:
        """Per mip level, all textures stacked: (materials, size, size, 3) uint8, from TEXTURE_SIZE to 4."""
        levels = [np.stack(self.textures)]
        while levels[-1].shape[1] > 4:
            half = levels[-1].shape[1] // 2
            levels.append(np.stack([cv2.resize(t, (half, half), interpolation=cv2.INTER_AREA) for t in levels[-1]]))
        return levels
