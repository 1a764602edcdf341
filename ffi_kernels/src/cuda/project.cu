// CUDA projection stage: one thread per Gaussian, forward and backward.
#include "fit3d/projection.h"
#include "fit3d/sh.h"
#include <type_traits>

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
// are padded to an odd stride so the threads' row accesses do not collide in shared banks. K is
// a template parameter so that the index arithmetic divides by constants.
template <int K>
constexpr int kSlabStride = 3 * K + 1;

template <int K>
__device__ int64_t slab_floats(int64_t num_gaussians) {
  return min(int64_t(kThreads), num_gaussians - int64_t(blockIdx.x) * kThreads) * 3 * K;
}

template <int K, bool kToShared>
__device__ void copy_slab(const float* src, float* dst, int64_t num_gaussians) {
  for (int64_t e = threadIdx.x; e < slab_floats<K>(num_gaussians); e += kThreads) {
    const int64_t padded = (e / (3 * K)) * kSlabStride<K> + e % (3 * K);
    if (kToShared) dst[padded] = src[e]; else dst[e] = src[padded];
  }
}

__device__ Vec3 load3(const float* p, int64_t i) { return {p[3 * i], p[3 * i + 1], p[3 * i + 2]}; }

__device__ int active_degree(const ProjectArgs& a) {
  const int max_degree = a.sh_coeffs >= 16 ? 3 : a.sh_coeffs >= 9 ? 2 : a.sh_coeffs >= 4 ? 1 : 0;
  return min(max(*a.sh_degree, 0), max_degree);
}

template <int K>
__global__ void project_forward_kernel(ProjectArgs views, float* means2d, float* conics,
                                       float* depths, float* colors, float* extents,
                                       int32_t* radii) {
  extern __shared__ float sh_slab[];
  const ProjectArgs a = views.view(blockIdx.y);
  const int64_t first = a.num_gaussians * blockIdx.y;  // this view's rows of the outputs
  means2d += 2 * first, conics += 3 * first, depths += first, colors += 3 * first;
  extents += 2 * first, radii += first;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  copy_slab<K, true>(a.sh + int64_t(blockIdx.x) * kThreads * 3 * K, sh_slab, a.num_gaussians);
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
    sh_to_color(active_degree(a), mean, cam.position(), sh_slab + kSlabStride<K> * threadIdx.x, color);
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

template <int K>
__global__ void project_backward_kernel(ProjectArgs views, ProjectCotangents cot, float* g_means,
                                        float* g_scales, float* g_quats, float* g_sh) {
  extern __shared__ float sh_slab[];  // coefficients in, their gradients out (in place)
  const ProjectArgs a = views.view(blockIdx.y);
  const int64_t b = blockIdx.y, first = a.num_gaussians * b;
  const float* d_means2d = at_view(cot.means2d, cot.stride.means2d, b);
  const float* d_conics = at_view(cot.conics, cot.stride.conics, b);
  const float* d_depths = at_view(cot.depths, cot.stride.depths, b);
  const float* d_colors = at_view(cot.colors, cot.stride.colors, b);
  g_means += 3 * first, g_scales += 3 * first, g_quats += 4 * first, g_sh += 3 * K * first;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t slab_offset = int64_t(blockIdx.x) * kThreads * 3 * K;
  copy_slab<K, true>(a.sh + slab_offset, sh_slab, a.num_gaussians);
  __syncthreads();
  if (i < a.num_gaussians)
    project_backward_one(a, i, d_means2d, d_conics, d_depths, d_colors, g_means, g_scales,
                         g_quats, sh_slab + kSlabStride<K> * threadIdx.x);
  __syncthreads();
  copy_slab<K, false>(sh_slab, g_sh + slab_offset, a.num_gaussians);
}


unsigned blocks_for(int64_t n) { return unsigned((n + kThreads - 1) / kThreads); }

}  // namespace

// Calls fn with the SH coefficient count as a compile-time constant.
template <typename Fn>
void with_sh_coeffs(int k, Fn&& fn) {
  switch (k) {
    case 1: return fn(std::integral_constant<int, 1>{});
    case 4: return fn(std::integral_constant<int, 4>{});
    case 9: return fn(std::integral_constant<int, 9>{});
    default: return fn(std::integral_constant<int, 16>{});
  }
}

void project_forward(cudaStream_t stream, const ProjectArgs& a, float* means2d, float* conics,
                     float* depths, float* colors, float* extents, int32_t* radii) {
  if (a.num_gaussians == 0 || a.views == 0) return;
  with_sh_coeffs(a.sh_coeffs, [&](auto k) {
    constexpr int K = decltype(k)::value;
    const int slab = kThreads * kSlabStride<K> * sizeof(float);
    cudaFuncSetAttribute(project_forward_kernel<K>, cudaFuncAttributeMaxDynamicSharedMemorySize, slab);
    const dim3 grid(blocks_for(a.num_gaussians), unsigned(a.views));
    project_forward_kernel<K><<<grid, kThreads, slab, stream>>>(
        a, means2d, conics, depths, colors, extents, radii);
  });
}

void project_backward(cudaStream_t stream, const ProjectArgs& a, const ProjectCotangents& cot,
                      float* g_means, float* g_scales, float* g_quats, float* g_sh) {
  if (a.num_gaussians == 0 || a.views == 0) return;
  with_sh_coeffs(a.sh_coeffs, [&](auto k) {
    constexpr int K = decltype(k)::value;
    const int slab = kThreads * kSlabStride<K> * sizeof(float);
    cudaFuncSetAttribute(project_backward_kernel<K>, cudaFuncAttributeMaxDynamicSharedMemorySize, slab);
    const dim3 grid(blocks_for(a.num_gaussians), unsigned(a.views));
    project_backward_kernel<K><<<grid, kThreads, slab, stream>>>(a, cot, g_means, g_scales,
                                                                    g_quats, g_sh);
  });
}

}  // namespace fit3d::cuda
