// Launchers of the CUDA build's stages (each stage's forward and backward live in one .cu file).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "fit3d/attention.h"
#include "fit3d/common.h"
#include "fit3d/raster_args.h"

namespace fit3d::cuda {

// A CUDA error turned into a message (empty when fine), checked after every launch.
std::string last_error(const char* where);

struct ProjectArgs : GaussianInputs {
  const int32_t* sh_degree;  // device scalar
  const float* camera;       // device, kCameraParams floats
  int width, height;
};

void project_forward(cudaStream_t stream, const ProjectArgs& a, float* means2d, float* conics,
                     float* depths, float* colors, float* extents, int32_t* radii);
void project_backward(cudaStream_t stream, const ProjectArgs& a, const float* d_means2d,
                      const float* d_conics, const float* d_depths, const float* d_colors,
                      float* g_means, float* g_scales, float* g_quats, float* g_sh);

// Device memory the binning needs for n Gaussians and `isect` intersections (upper bounds).
struct BinningScratch {
  void* (*allocate)(void* ctx, size_t bytes);  // returns nullptr when out of memory
  void* ctx;
};

// Bins the Gaussians into tiles: validates inputs, counts intersections (read back to the
// host), sorts (tile, depth) keys and writes the tile offsets. The sorted ids land in
// `gids_out` when it has room (capacity >= n_isect), else in scratch; *sorted points at them.
// Returns an error message or "".
std::string bin_gaussians(cudaStream_t stream, const RasterInputs& in, BinningScratch scratch,
                          int32_t* tile_offsets, int32_t* gids_out, int64_t capacity,
                          int64_t* n_isect, const int32_t** sorted, int64_t* first_bad);

void rasterize_forward(cudaStream_t stream, const RasterInputs& in, const int32_t* tile_offsets,
                       const int32_t* gids, const RasterOutputs& out);
void rasterize_backward(cudaStream_t stream, const RasterInputs& in, const int32_t* tile_offsets,
                        const int32_t* gids, const float* trans, const int32_t* last,
                        const RasterCotangents& cot, bool feature_geometry,
                        const RasterGrads& grads);

// Fused float32 attention (3xTF32 tensor cores) for head_dim 64; each returns an error or "".
std::string attention_forward(cudaStream_t stream, const AttentionShape& s, const float* q,
                              const float* k, const float* v, float* out, float* lse);
std::string attention_backward(cudaStream_t stream, const AttentionShape& s, const float* q,
                               const float* k, const float* v, const float* dout, const float* lse,
                               const float* delta, float* dq, float* dk, float* dv);

}  // namespace fit3d::cuda
