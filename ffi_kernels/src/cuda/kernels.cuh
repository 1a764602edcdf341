// Launchers of the CUDA build's stages (each stage's forward and backward live in one .cu file).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "fit3d/attention.h"
#include "fit3d/cross_entropy.h"
#include "fit3d/common.h"
#include "fit3d/raster_args.h"

namespace fit3d::cuda {

// A CUDA error turned into a message (empty when fine), checked after every launch.
std::string last_error(const char* where);

struct ProjectArgs : GaussianInputs {
  const int32_t* sh_degree;  // device scalar (per view)
  const float* camera;       // device, kCameraParams floats (per view)
  int width, height;
  int64_t degree_stride, camera_stride;  // between views; 0 when shared

  __host__ __device__ ProjectArgs view(int64_t b) const {
    ProjectArgs v = *this;
    static_cast<GaussianInputs&>(v) = GaussianInputs::view(b);
    v.sh_degree = at_view(sh_degree, degree_stride, b);
    v.camera = at_view(camera, camera_stride, b);
    return v;
  }
};

// The stages below take a batch of a.views (in.views) views in one launch per kernel: the
// grid's y index is the view; outputs hold the views one after another.
void project_forward(cudaStream_t stream, const ProjectArgs& a, float* means2d, float* conics,
                     float* depths, float* colors, float* extents, int32_t* radii);

// Cotangents of the projected means2d, conics, depths and colours (strides between views).
struct ProjectCotangents {
  const float *means2d, *conics, *depths, *colors;
  struct { int64_t means2d, conics, depths, colors; } stride;
};

void project_backward(cudaStream_t stream, const ProjectArgs& a, const ProjectCotangents& cot,
                      float* g_means, float* g_scales, float* g_quats, float* g_sh);

// Device memory the binning needs for n Gaussians and `isect` intersections (upper bounds).
struct BinningScratch {
  void* (*allocate)(void* ctx, size_t bytes);  // returns nullptr when out of memory
  void* ctx;
};

// Bins the Gaussians of all views into tiles at once: validates inputs, counts intersections
// (their total read back to the host), sorts (view tile, depth) keys and writes the offsets,
// row b of tile_offsets (views, T + 1) holding view b's tiles' offsets into the one sorted list.
// The sorted ids land in `gids_out` when it has room (capacity >= total), else in scratch;
// *sorted points at them. view_counts (views,), when given, gets each view's intersections.
// *first_bad counts over the views (view * N + Gaussian). Returns an error message or "".
std::string bin_gaussians(cudaStream_t stream, const RasterInputs& in, BinningScratch scratch,
                          int32_t* tile_offsets, int32_t* gids_out, int64_t capacity,
                          int32_t* view_counts, int64_t* n_isect, const int32_t** sorted,
                          int64_t* first_bad);

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

// The fused segmentation loss (fit3d/cross_entropy.h); returns an error or "".
std::string cross_entropy(cudaStream_t stream, const CrossEntropyShape& s, const CrossEntropyArgs& a);

}  // namespace fit3d::cuda
