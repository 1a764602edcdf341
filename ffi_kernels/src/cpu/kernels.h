// CPU implementation of the rasterizer stages: the same algorithm as the CUDA build (tiles,
// (tile, depth) keys sorted stably, per-pixel front-to-back blending, back-to-front backward),
// parallel over Gaussians or tiles with plain threads.
#pragma once

#include <cstdint>
#include <vector>

#include "fit3d/attention.h"
#include "fit3d/cross_entropy.h"
#include "fit3d/common.h"
#include "fit3d/raster_args.h"

namespace fit3d::cpu {

struct ProjectArgs : GaussianInputs {
  int sh_degree;  // active degree, already clamped to what K allows
  Camera camera;
};

struct ProjectOutputs {
  float* means2d;   // (N, 2)
  float* conics;    // (N, 3)
  float* depths;    // (N,)
  float* colors;    // (N, 3)
  float* extents;   // (N, 2)
  int32_t* radii;   // (N,)
};

struct ProjectCotangents {
  const float* means2d;
  const float* conics;
  const float* depths;
  const float* colors;
};

struct ProjectGrads {
  float* means;
  float* scales;
  float* quats;
  float* sh;
};

void project_forward(const ProjectArgs& args, const ProjectOutputs& out);
void project_backward(const ProjectArgs& args, const ProjectCotangents& cot, const ProjectGrads& grads);

// Index of the first Gaussian with a non-finite rasterizer input, or -1.
int64_t first_nonfinite(const RasterInputs& in);

struct Binning {
  std::vector<int32_t> tile_offsets;  // num_tiles + 1 offsets into gids
  std::vector<int32_t> gids;          // Gaussian ids sorted by (tile, depth, id)
};
Binning bin_gaussians(const RasterInputs& in);

void rasterize_forward(const RasterInputs& in, const int32_t* tile_offsets, const int32_t* gids,
                       const RasterOutputs& out);
void rasterize_backward(const RasterInputs& in, const int32_t* tile_offsets, const int32_t* gids,
                        const float* trans, const int32_t* last, const RasterCotangents& cot,
                        bool feature_geometry, const RasterGrads& grads);

// Fused attention, any head_dim: the same outputs as the CUDA build (which computes in 3xTF32).
void attention_forward(const AttentionShape& s, const float* q, const float* k, const float* v,
                       float* out, float* lse);
void attention_backward(const AttentionShape& s, const float* q, const float* k, const float* v,
                        const float* dout, const float* lse, const float* delta, float* dq,
                        float* dk, float* dv);

// The fused segmentation loss (fit3d/cross_entropy.h); tap indices already checked in range.
void cross_entropy(const CrossEntropyShape& s, const CrossEntropyArgs& a);

}  // namespace fit3d::cpu
