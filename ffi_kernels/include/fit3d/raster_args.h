// Argument bundles of the rasterizer stages, shared by the CPU and CUDA builds. All arrays are
// row-major float32 (indices int32) in the layouts of fit3d_jax/render/ffi.py.
//
// One call renders a batch of `views` (jax.vmap over cameras): every array then holds its views
// one after another, `stride` elements apart, or once for all of them (stride 0, an operand
// vmap did not batch). view(b) is the single-view bundle of view b.
#pragma once

#include <cstdint>

#include "fit3d/common.h"

namespace fit3d {

template <typename T>
FIT3D_HD T* at_view(T* p, int64_t stride, int64_t b) {
  return p + stride * b;
}

// The Gaussians' parameters: what the projection stage reads in both builds.
struct GaussianInputs {
  int64_t num_gaussians;
  int sh_coeffs;           // K
  const float* means;      // (N, 3)
  const float* scales;     // (N, 3)
  const float* quats;      // (N, 4) w x y z, any norm
  const float* opacities;  // (N,)
  const float* sh;         // (N, K, 3)
  int64_t views = 1;
  struct { int64_t means, scales, quats, opacities, sh; } stride{};

  FIT3D_HD GaussianInputs view(int64_t b) const {
    GaussianInputs v = *this;
    v.views = 1;
    v.means = at_view(means, stride.means, b);
    v.scales = at_view(scales, stride.scales, b);
    v.quats = at_view(quats, stride.quats, b);
    v.opacities = at_view(opacities, stride.opacities, b);
    v.sh = at_view(sh, stride.sh, b);
    return v;
  }
};

struct RasterInputs {
  int64_t num_gaussians;
  int channels;  // feature channels C
  int width, height;
  const float* means2d;    // (N, 2)
  const float* conics;     // (N, 3)
  const float* opacities;  // (N,)
  const float* colors;     // (N, 3)
  const float* depths;     // (N,)
  const float* features;   // (N, C)
  const float* extents;    // (N, 2), <= 0 when culled
  int64_t views = 1;
  struct { int64_t means2d, conics, opacities, colors, depths, features, extents; } stride{};

  FIT3D_HD RasterInputs view(int64_t b) const {
    RasterInputs v = *this;
    v.views = 1;
    v.means2d = at_view(means2d, stride.means2d, b);
    v.conics = at_view(conics, stride.conics, b);
    v.opacities = at_view(opacities, stride.opacities, b);
    v.colors = at_view(colors, stride.colors, b);
    v.depths = at_view(depths, stride.depths, b);
    v.features = at_view(features, stride.features, b);
    v.extents = at_view(extents, stride.extents, b);
    return v;
  }
};

struct RasterOutputs {
  float* rgb;       // (H, W, 3) sum of w * colour
  float* features;  // (H, W, C) sum of w * feature
  float* depth;     // (H, W) sum of w * depth
  float* trans;     // (H, W) final transmittance
  int32_t* last;    // (H, W) one past the last blended entry of the sorted list

  // Outputs are batched like the call: view b starts b * pixels pixels in.
  FIT3D_HD RasterOutputs view(int64_t b, int64_t pixels, int channels) const {
    return {rgb + 3 * pixels * b, features + channels * pixels * b, depth + pixels * b,
            trans + pixels * b, last + pixels * b};
  }
};

// Cotangents of RasterOutputs (the pixel gradients of the backward pass).
struct RasterCotangents {
  const float* rgb;
  const float* features;
  const float* depth;
  const float* trans;
  struct { int64_t rgb, features, depth, trans; } stride{};  // 0: the same for every view

  FIT3D_HD RasterCotangents view(int64_t b) const {
    return {at_view(rgb, stride.rgb, b), at_view(features, stride.features, b),
            at_view(depth, stride.depth, b), at_view(trans, stride.trans, b), {}};
  }
};

struct RasterGrads {
  float* means2d;
  float* conics;
  float* opacities;
  float* colors;
  float* depths;
  float* features;

  FIT3D_HD RasterGrads view(int64_t b, int64_t n, int channels) const {
    return {means2d + 2 * n * b, conics + 3 * n * b, opacities + n * b, colors + 3 * n * b,
            depths + n * b, features + channels * n * b};
  }
};

}  // namespace fit3d
