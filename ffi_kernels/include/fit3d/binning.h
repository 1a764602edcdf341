// Tile binning helpers shared by the CPU and CUDA builds (host-device): which tiles a projected
// Gaussian touches, its sort key, and the validation of rasterizer inputs.
//
// Every (tile, Gaussian) pair becomes one key: tile id in the high 32 bits, the bits of the
// (positive) camera depth in the low 32. A stable sort of the keys, emitted in Gaussian order,
// yields per tile its Gaussians front to back with ties broken by Gaussian index.
#pragma once

#include <cstring>

#include "fit3d/projection.h"

namespace fit3d {

struct TileRect {
  int x0, x1, y0, y1;  // inclusive tile index ranges
};

FIT3D_HD bool tile_rect(Vec2 mean2d, Vec2 extent, int width, int height, TileRect* r) {
  int x0, x1, y0, y1;
  if (!pixel_rect(mean2d, extent, width, height, &x0, &x1, &y0, &y1)) return false;
  *r = TileRect{x0 / kTile, x1 / kTile, y0 / kTile, y1 / kTile};
  return true;
}

FIT3D_HD int tile_rect_count(const TileRect& r) { return (r.x1 - r.x0 + 1) * (r.y1 - r.y0 + 1); }

FIT3D_HD uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
#endif
}

FIT3D_HD uint64_t sort_key(int tile, float depth) {
  return (uint64_t(uint32_t(tile)) << 32) | uint64_t(float_bits(depth));
}

// Number of significant bits of the tile id (the radix sort only needs 32 + this many).
FIT3D_HD int tile_id_bits(int num_tiles) {
  int bits = 0;
  while ((1 << bits) < num_tiles + 1 && bits < 31) ++bits;
  return bits;
}

// Rasterizer inputs of one Gaussian must be finite, otherwise culling, binning and sorting
// would silently produce garbage; the handlers turn a failure into an error naming the index.
FIT3D_HD bool raster_inputs_finite(int i, const float* means2d, const float* conics,
                                   const float* opacities, const float* colors,
                                   const float* depths, const float* extents) {
  bool ok = is_finite(opacities[i]) && is_finite(depths[i]);
  for (int k = 0; k < 2; ++k) ok = ok && is_finite(means2d[2 * i + k]) && is_finite(extents[2 * i + k]);
  for (int k = 0; k < 3; ++k) ok = ok && is_finite(conics[3 * i + k]) && is_finite(colors[3 * i + k]);
  return ok;
}

}  // namespace fit3d
