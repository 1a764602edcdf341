// Argument bundles of the rasterizer stages, shared by the CPU and CUDA builds. All arrays are
// row-major float32 (indices int32) in the layouts of fit3d_jax/render/ffi.py.
#pragma once

#include <cstdint>

namespace fit3d {

// The Gaussians' parameters: what the projection stage reads in both builds.
struct GaussianInputs {
  int64_t num_gaussians;
  int sh_coeffs;           // K
  const float* means;      // (N, 3)
  const float* scales;     // (N, 3)
  const float* quats;      // (N, 4) w x y z, any norm
  const float* opacities;  // (N,)
  const float* sh;         // (N, K, 3)
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
};

struct RasterOutputs {
  float* rgb;       // (H, W, 3) sum of w * colour
  float* features;  // (H, W, C) sum of w * feature
  float* depth;     // (H, W) sum of w * depth
  float* trans;     // (H, W) final transmittance
  int32_t* last;    // (H, W) one past the last blended entry of the sorted list
};

// Cotangents of RasterOutputs (the pixel gradients of the backward pass).
struct RasterCotangents {
  const float* rgb;
  const float* features;
  const float* depth;
  const float* trans;
};

struct RasterGrads {
  float* means2d;
  float* conics;
  float* opacities;
  float* colors;
  float* depths;
  float* features;
};

}  // namespace fit3d
