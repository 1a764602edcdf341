// CUDA projection stage: one thread per Gaussian, forward and backward.
#include "fit3d/projection.h"
#include "fit3d/sh.h"
#include "kernels.cuh"

namespace fit3d::cuda {

std::string last_error(const char* where) {
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? std::string() : std::string(where) + ": " + cudaGetErrorString(err);
}

namespace {

constexpr int kThreads = 256;

// The SH coefficients of a block's Gaussians are one contiguous slab of kThreads * K * 3 floats;
// staging it through shared memory makes the global reads and writes coalesced (a thread's own
// 48 floats would otherwise be touched 4 bytes at a time across 32 cache lines per warp). Rows
// are padded to an odd stride so the threads' row accesses do not collide in shared banks.
__device__ int slab_stride(const ProjectArgs& a) { return 3 * a.sh_coeffs + 1; }

size_t slab_bytes(const ProjectArgs& a) { return size_t(kThreads) * (3 * a.sh_coeffs + 1) * sizeof(float); }

__device__ int64_t slab_floats(const ProjectArgs& a) {
  const int64_t first = int64_t(blockIdx.x) * kThreads;
  return min(int64_t(kThreads), a.num_gaussians - first) * 3 * a.sh_coeffs;
}

// global slab (dense rows of 3K) <-> shared slab (rows of 3K + 1)
__device__ void slab_to_shared(const ProjectArgs& a, const float* src, float* slab) {
  const int k3 = 3 * a.sh_coeffs;
  for (int64_t e = threadIdx.x; e < slab_floats(a); e += kThreads)
    slab[(e / k3) * slab_stride(a) + e % k3] = src[e];
}
__device__ void slab_to_global(const ProjectArgs& a, const float* slab, float* dst) {
  const int k3 = 3 * a.sh_coeffs;
  for (int64_t e = threadIdx.x; e < slab_floats(a); e += kThreads)
    dst[e] = slab[(e / k3) * slab_stride(a) + e % k3];
}

__device__ Vec3 load3(const float* p, int64_t i) { return {p[3 * i], p[3 * i + 1], p[3 * i + 2]}; }

__device__ int active_degree(const ProjectArgs& a) {
  const int max_degree = a.sh_coeffs >= 16 ? 3 : a.sh_coeffs >= 9 ? 2 : a.sh_coeffs >= 4 ? 1 : 0;
  return min(max(*a.sh_degree, 0), max_degree);
}

__global__ void project_forward_kernel(ProjectArgs a, float* means2d, float* conics, float* depths,
                                       float* colors, float* extents, int32_t* radii) {
  extern __shared__ float sh_slab[];
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  slab_to_shared(a, a.sh + int64_t(blockIdx.x) * kThreads * 3 * a.sh_coeffs, sh_slab);
  __syncthreads();
  if (i >= a.num_gaussians) return;
  const Camera cam = Camera::from_params(a.camera, a.width, a.height);
  const Vec3 mean = load3(a.means, i);
  float quat[4] = {a.quats[4 * i], a.quats[4 * i + 1], a.quats[4 * i + 2], a.quats[4 * i + 3]};
  Projected p;
  const bool visible = project_gaussian(cam, mean, load3(a.scales, i), quat, a.opacities[i], &p);
  means2d[2 * i] = p.mean2d.x;
  means2d[2 * i + 1] = p.mean2d.y;
  for (int k = 0; k < 3; ++k) conics[3 * i + k] = p.conic[k];
  depths[i] = p.depth;
  extents[2 * i] = p.extent.x;
  extents[2 * i + 1] = p.extent.y;
  radii[i] = p.radius;
  float color[3] = {0.f, 0.f, 0.f};
  if (visible || !is_finite(p.depth))  // NaN inputs propagate so validation reports them
    sh_to_color(active_degree(a), mean, cam.position(), sh_slab + slab_stride(a) * threadIdx.x, color);
  for (int k = 0; k < 3; ++k) colors[3 * i + k] = color[k];
}

__device__ void project_backward_one(const ProjectArgs& a, int64_t i, const float* d_means2d,
                                     const float* d_conics, const float* d_depths,
                                     const float* d_colors, float* g_means, float* g_scales,
                                     float* g_quats, float* sh_row) {
  const Camera cam = Camera::from_params(a.camera, a.width, a.height);
  const Vec3 mean = load3(a.means, i), scale = load3(a.scales, i);
  float quat[4] = {a.quats[4 * i], a.quats[4 * i + 1], a.quats[4 * i + 2], a.quats[4 * i + 3]};
  const int k3 = 3 * a.sh_coeffs;
  float* d_sh = sh_row;
  Projected p;
  if (!project_gaussian(cam, mean, scale, quat, a.opacities[i], &p)) {
    for (int k = 0; k < 3; ++k) g_means[3 * i + k] = g_scales[3 * i + k] = 0.f;
    for (int k = 0; k < 4; ++k) g_quats[4 * i + k] = 0.f;
    for (int k = 0; k < k3; ++k) d_sh[k] = 0.f;
    return;
  }
  const float d_conic[3] = {d_conics[3 * i], d_conics[3 * i + 1], d_conics[3 * i + 2]};
  const ProjectionGrads pg = project_gaussian_backward(
      cam, mean, scale, quat, {d_means2d[2 * i], d_means2d[2 * i + 1]}, d_conic, d_depths[i]);
  const float d_color[3] = {d_colors[3 * i], d_colors[3 * i + 1], d_colors[3 * i + 2]};
  const Vec3 d_mean = pg.mean + sh_to_color_backward(active_degree(a), a.sh_coeffs, mean,
                                                     cam.position(), sh_row, d_color, d_sh);
  g_means[3 * i] = d_mean.x;
  g_means[3 * i + 1] = d_mean.y;
  g_means[3 * i + 2] = d_mean.z;
  g_scales[3 * i] = pg.scale.x;
  g_scales[3 * i + 1] = pg.scale.y;
  g_scales[3 * i + 2] = pg.scale.z;
  for (int k = 0; k < 4; ++k) g_quats[4 * i + k] = pg.quat[k];
}

__global__ void project_backward_kernel(ProjectArgs a, const float* d_means2d, const float* d_conics,
                                        const float* d_depths, const float* d_colors, float* g_means,
                                        float* g_scales, float* g_quats, float* g_sh) {
  extern __shared__ float sh_slab[];  // coefficients in, their gradients out (in place)
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t slab_offset = int64_t(blockIdx.x) * kThreads * 3 * a.sh_coeffs;
  slab_to_shared(a, a.sh + slab_offset, sh_slab);
  __syncthreads();
  if (i < a.num_gaussians)
    project_backward_one(a, i, d_means2d, d_conics, d_depths, d_colors, g_means, g_scales,
                         g_quats, sh_slab + slab_stride(a) * threadIdx.x);
  __syncthreads();
  slab_to_global(a, sh_slab, g_sh + slab_offset);
}


unsigned blocks_for(int64_t n) { return unsigned((n + kThreads - 1) / kThreads); }

}  // namespace

void project_forward(cudaStream_t stream, const ProjectArgs& a, float* means2d, float* conics,
                     float* depths, float* colors, float* extents, int32_t* radii) {
  if (a.num_gaussians == 0) return;
  const size_t slab = slab_bytes(a);
  cudaFuncSetAttribute(project_forward_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(slab));
  project_forward_kernel<<<blocks_for(a.num_gaussians), kThreads, slab, stream>>>(
      a, means2d, conics, depths, colors, extents, radii);
}

void project_backward(cudaStream_t stream, const ProjectArgs& a, const float* d_means2d,
                      const float* d_conics, const float* d_depths, const float* d_colors,
                      float* g_means, float* g_scales, float* g_quats, float* g_sh) {
  if (a.num_gaussians == 0) return;
  const size_t slab = slab_bytes(a);
  cudaFuncSetAttribute(project_backward_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(slab));
  project_backward_kernel<<<blocks_for(a.num_gaussians), kThreads, slab, stream>>>(
      a, d_means2d, d_conics, d_depths, d_colors, g_means, g_scales, g_quats, g_sh);
}

}  // namespace fit3d::cuda
