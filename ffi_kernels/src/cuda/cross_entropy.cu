// The fused segmentation loss on the GPU (fit3d/cross_entropy.h), forward and gradient in one
// pass. A CTA owns one row; a warp owns the segment of a column j (the pixels whose low tap is
// j), lanes over classes, with the segment's two columns of logits in registers, scaled by
// log2(e) so each score's exponential is one ex2. Per pixel: the interpolated scores, their max
// and the sum of their exponentials by shuffles, then the softmax weighted into the two columns'
// partial gradients (registers). The label's terms (its score in the loss, the one-hot in the
// gradient) touch one class per pixel, so they are added apart, after the softmax's: a lane per
// pixel, shared-memory atomics. The partials meet in shared memory, a column's gradient being
// the sum of its own segment's and the previous one's.
#include <algorithm>
#include <cmath>

#include "cuda/kernels.cuh"

namespace fit3d::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxPerLane = kMaxCrossEntropyClasses / 32;
constexpr float kLog2e = 1.4426950408889634f, kLn2 = 0.6931471805599453f;

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float exp2_approx(float x) {  // MUFU.EX2: 2^-inf = 0, NaN stays NaN
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// kPerLane classes per lane: lane l holds classes l, l + 32, ...
template <int kPerLane>
__global__ void __launch_bounds__(kThreads)
    cross_entropy_kernel(CrossEntropyShape s, CrossEntropyArgs a) {
  extern __shared__ float smem[];
  __shared__ float warp_nll[kWarps];
  const int w = int(s.in_width), width = int(s.out_width), C = int(s.classes);
  const int64_t r = blockIdx.x;
  float* low = smem;         // (in_width, classes): each column's own segment's partial
  float* high = low + w * C;  // (in_width, classes): the previous segment's
  for (int i = threadIdx.x; i < w * C; i += kThreads) high[i] = 0.f;
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const float* logits = a.logits + r * w * C;
  const int32_t* labels = a.labels + r * width;
  float nll = 0.f, lse2 = 0.f;  // this lane's terms: -scores[label] (natural units), log2-sum-exp2
  for (int j = warp; j < w; j += kWarps) {
    const int begin = a.segments[j], end = a.segments[j + 1];
    const int j1 = begin < end ? a.tap_index[2 * begin + 1] : j;
    float l0[kPerLane], l1[kPerLane], acc0[kPerLane], acc1[kPerLane];
#pragma unroll
    for (int q = 0; q < kPerLane; ++q) {
      const int c = lane + 32 * q;
      l0[q] = c < C ? kLog2e * logits[j * C + c] : 0.f;
      l1[q] = c < C ? kLog2e * logits[j1 * C + c] : 0.f;
      acc0[q] = acc1[q] = 0.f;
    }
    for (int x = begin; x < end; ++x) {
      if (labels[x] == s.ignore_index) continue;  // the same on every lane
      const float w0 = a.tap_weight[2 * x], w1 = a.tap_weight[2 * x + 1];
      float z[kPerLane], m = -INFINITY, sum = 0.f;
#pragma unroll
      for (int q = 0; q < kPerLane; ++q) {
        z[q] = fmaf(w1, l1[q], w0 * l0[q]);
        // only the last register can hold padding classes (kPerLane is the least that fits C)
        if (q == kPerLane - 1 && lane + 32 * q >= C) z[q] = -INFINITY;
        m = fmaxf(m, z[q]);  // fmaxf skips NaN: a NaN score still poisons the sum below
      }
      m = warp_max(m);
#pragma unroll
      for (int q = 0; q < kPerLane; ++q) {
        z[q] = exp2_approx(z[q] - m);  // 0 for the padding classes
        sum += z[q];
      }
      sum = warp_sum(sum);
      const float inv = 1.f / sum, v0 = w0 * inv, v1 = w1 * inv;
#pragma unroll
      for (int q = 0; q < kPerLane; ++q) {
        acc0[q] = fmaf(v0, z[q], acc0[q]);
        acc1[q] = fmaf(v1, z[q], acc1[q]);
      }
      if (lane == 0) lse2 += m + log2f(sum);
    }
#pragma unroll
    for (int q = 0; q < kPerLane; ++q) {
      const int c = lane + 32 * q;
      if (c >= C) continue;
      if (j1 == j) {  // the last column: its segment's high tap is itself
        low[j * C + c] = acc0[q] + acc1[q];
      } else {
        low[j * C + c] = acc0[q];
        high[j1 * C + c] = acc1[q];
      }
    }
    __syncwarp();
    float* column1 = (j1 == j ? low : high) + j1 * C;
    for (int x = begin + lane; x < end; x += 32) {  // the labels' terms, a pixel per lane
      const int32_t label = labels[x];
      if (label == s.ignore_index || label < 0 || label >= C) continue;  // no class: no one-hot, no score
      const float w0 = a.tap_weight[2 * x], w1 = a.tap_weight[2 * x + 1];
      atomicAdd(low + j * C + label, -w0);
      atomicAdd(column1 + label, -w1);
      nll -= fmaf(w1, logits[j1 * C + label], w0 * logits[j * C + label]);
    }
  }
  __syncthreads();
  float* grad = a.grad + r * w * C;
  for (int i = threadIdx.x; i < w * C; i += kThreads) grad[i] = high[i] + low[i];
  nll = warp_sum(nll + kLn2 * lse2);
  if (lane == 0) warp_nll[warp] = nll;
  __syncthreads();
  if (threadIdx.x == 0) {
    float total = 0.f;
    for (int i = 0; i < kWarps; ++i) total += warp_nll[i];
    a.nll[r] = total;
  }
}

template <int kPerLane>
std::string launch(cudaStream_t stream, const CrossEntropyShape& s, const CrossEntropyArgs& a) {
  if (s.classes > 32 * kPerLane) return launch<std::min(kPerLane + 1, kMaxPerLane)>(stream, s, a);
  int device = 0, optin = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  const int64_t bytes = 2 * s.in_width * s.classes * int64_t(sizeof(float));
  if (bytes + int64_t(kWarps * sizeof(float)) > optin)
    return "cross_entropy: a row of " + std::to_string(s.in_width) + " columns x " +
           std::to_string(s.classes) + " classes needs more shared memory than the GPU's " +
           std::to_string(optin / 1024) + " KiB; set config.fused_loss=False (the XLA loss)";
  auto* kernel = cross_entropy_kernel<kPerLane>;
  // Over 48 KiB of dynamic shared memory needs opting in; a host-side call, not stream work.
  if (cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
      e != cudaSuccess)
    return std::string("cross_entropy: ") + cudaGetErrorString(e);
  kernel<<<unsigned(s.rows), kThreads, size_t(bytes), stream>>>(s, a);
  return last_error("cross_entropy");
}

}  // namespace

std::string cross_entropy(cudaStream_t stream, const CrossEntropyShape& s, const CrossEntropyArgs& a) {
  if (s.rows == 0) return "";
  if (s.classes > kMaxCrossEntropyClasses)
    return "cross_entropy: the CUDA kernel takes at most " + std::to_string(kMaxCrossEntropyClasses) +
           " classes, got " + std::to_string(s.classes) + "; set config.fused_loss=False (the XLA loss)";
  return launch<1>(stream, s, a);
}

}  // namespace fit3d::cuda
