// CUDA rasterization stage: one 256-thread block per 16x16 tile (grid x) and view (grid y).
//
// Forward: Gaussians of the tile are staged through shared memory in depth order; each thread
// blends its pixel front to back (RGB, depth and C feature channels in registers) until its
// transmittance would drop below 1e-4; the block stops once all its pixels have.
//
// Backward, per batch of Gaussians taken back to front from the tile's last contributor:
//  1. pixel pass: each thread walks the batch back to front for its pixel, recovering the
//     transmittance from the saved final one, and writes the pair weight w and dL/dsigma to
//     shared memory plus one ballot bit per (Gaussian, warp) where w != 0;
//  2. Gaussian pass: one warp per Gaussian visits only the contributing pixels (the ballots):
//     lanes over pixels for the geometry/colour/depth gradients (reduced within the warp before
//     one atomic per value), then lanes over channels for the feature gradients (lane groups
//     each take a pixel's row; one atomic per channel per tile), so no per-pixel reduction of C
//     values is needed. Warps take Gaussians from a shared counter so large splats balance.
#include <algorithm>

#include "fit3d/binning.h"
#include "fit3d/blend.h"
#include "kernels.cuh"

namespace fit3d::cuda {
namespace {

constexpr int kThreads = kTilePixels;  // one thread per pixel of a tile
constexpr int kWarps = kThreads / 32;
constexpr int kForwardBatch = 64;      // Gaussians staged per round (forward)
// Gaussians per round of the backward (w and dL/dsigma of each pair are kept in shared memory).
constexpr int kBackwardBatch = 16;
constexpr unsigned kFullMask = 0xffffffffu;

// What the per-pixel loops read of one Gaussian (shared memory, broadcast to all threads).
struct Splat {
  Vec2 mean;
  float conic[3];
  float opacity;
  float color[3];
  float depth;
  int x0, x1, y0, y1;  // pixel box, inclusive
  int gid;
};

__device__ void load_splat(const RasterInputs& in, int32_t g, Splat* s) {
  s->mean = {in.means2d[2 * g], in.means2d[2 * g + 1]};
  for (int k = 0; k < 3; ++k) {
    s->conic[k] = in.conics[3 * g + k];
    s->color[k] = in.colors[3 * g + k];
  }
  s->opacity = in.opacities[g];
  s->depth = in.depths[g];
  s->gid = g;
  if (!pixel_rect(s->mean, {in.extents[2 * g], in.extents[2 * g + 1]}, in.width, in.height, &s->x0,
                  &s->x1, &s->y0, &s->y1)) {
    s->x0 = s->y0 = 1;
    s->x1 = s->y1 = 0;  // empty
  }
}

__device__ bool covers(const Splat& s, int x, int y) {
  return x >= s.x0 && x <= s.x1 && y >= s.y0 && y <= s.y1;
}

// Stages rows of features (C floats, zero padded to CP) of `count` Gaussians into shared memory.
template <int CP>
__device__ void load_features(const RasterInputs& in, const int32_t* ids, int count, float* dst) {
  for (int e = threadIdx.x; e < count * CP; e += kThreads) {
    const int j = e / CP, c = e % CP;
    dst[e] = c < in.channels ? in.features[int64_t(ids[j]) * in.channels + c] : 0.f;
  }
}

// ------------------------------------------------------------------------------ forward

template <int CP>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(RasterInputs views, const int32_t* tile_offsets, const int32_t* gids,
                   RasterOutputs outputs) {
  __shared__ Splat splats[kForwardBatch];
  __shared__ __align__(16) float feats[kForwardBatch * CP];
  const RasterInputs in = views.view(blockIdx.y);
  const RasterOutputs out = outputs.view(blockIdx.y, int64_t(in.width) * in.height, in.channels);
  tile_offsets += int64_t(blockIdx.y) * (gridDim.x + 1);  // this view's row
  const int tile = blockIdx.x, ntx = tiles_x(in.width);
  const int x = (tile % ntx) * kTile + threadIdx.x % kTile;
  const int y = (tile / ntx) * kTile + threadIdx.x / kTile;
  const bool inside = x < in.width && y < in.height;
  const float px = x + 0.5f, py = y + 0.5f;
  const int begin = tile_offsets[tile], end = tile_offsets[tile + 1];

  float t = 1.f, rgb[3] = {0.f, 0.f, 0.f}, depth = 0.f, acc[CP];
#pragma unroll
  for (int c = 0; c < CP; ++c) acc[c] = 0.f;
  int last = begin;
  bool done = !inside;

  for (int start = begin; start < end; start += kForwardBatch) {
    if (__syncthreads_count(done) == kThreads) break;  // also fences the previous round
    const int nb = min(kForwardBatch, end - start);
    if (int(threadIdx.x) < nb) load_splat(in, gids[start + threadIdx.x], &splats[threadIdx.x]);
    load_features<CP>(in, gids + start, nb, feats);
    __syncthreads();
    for (int j = 0; j < nb && !done; ++j) {
      const Splat& s = splats[j];
      if (!covers(s, x, y)) continue;
      const SplatEval e = splat_eval(s.mean, s.conic, s.opacity, px, py);
      if (e.alpha == 0.f) continue;
      const float t_next = t * (1.f - e.alpha);
      if (t_next < kTransmittanceMin) {
        done = true;
        break;
      }
      const float w = e.alpha * t;
      for (int c = 0; c < 3; ++c) rgb[c] += w * s.color[c];
      depth += w * s.depth;
      const float4* f = reinterpret_cast<const float4*>(feats + j * CP);
#pragma unroll
      for (int c4 = 0; c4 < CP / 4; ++c4) {
        const float4 v = f[c4];
        acc[4 * c4] += w * v.x;
        acc[4 * c4 + 1] += w * v.y;
        acc[4 * c4 + 2] += w * v.z;
        acc[4 * c4 + 3] += w * v.w;
      }
      t = t_next;
      last = start + j + 1;
    }
  }
  if (!inside) return;
  const int64_t pix = int64_t(y) * in.width + x;
  for (int c = 0; c < 3; ++c) out.rgb[3 * pix + c] = rgb[c];
  out.depth[pix] = depth;
  out.trans[pix] = t;
  out.last[pix] = last;
  float* dst = out.features + pix * in.channels;
  if (in.channels == CP) {
    float4* d4 = reinterpret_cast<float4*>(dst);
#pragma unroll
    for (int c4 = 0; c4 < CP / 4; ++c4)
      d4[c4] = make_float4(acc[4 * c4], acc[4 * c4 + 1], acc[4 * c4 + 2], acc[4 * c4 + 3]);
  } else {
#pragma unroll
    for (int c = 0; c < CP; ++c)
      if (c < in.channels) dst[c] = acc[c];
  }
}

// ------------------------------------------------------------------------------ backward

// One round of warp_reduce_scatter16: lanes whose bit N is set keep the upper N/2 of the N
// values still in play and add their partner's copies (partner = lane ^ N).
template <int N>
__device__ void reduce_scatter_round(float (&v)[16], int lane) {
  const bool upper = lane & N;
#pragma unroll
  for (int k = 0; k < N / 2; ++k) {
    const float send = upper ? v[k] : v[k + N / 2];
    const float keep = upper ? v[k + N / 2] : v[k];
    v[k] = keep + __shfl_xor_sync(kFullMask, send, N);
  }
}

// Sums 16 per-lane values over the warp with 16 shuffles (instead of 16 all-reduces of 5):
// afterwards lanes 2i and 2i+1 both hold the warp total of value i.
__device__ float warp_reduce_scatter16(float (&v)[16], int lane) {
  reduce_scatter_round<16>(v, lane);
  reduce_scatter_round<8>(v, lane);
  reduce_scatter_round<4>(v, lane);
  reduce_scatter_round<2>(v, lane);
  return v[0] + __shfl_xor_sync(kFullMask, v[0], 1);
}

// Loads `count` consecutive floats of a feature row (count <= N; the rest are zero), vectorised
// when the row is complete and 16-byte aligned.
template <int N>
__device__ void load_row(const float* src, int count, float (&dst)[N]) {
  if (N % 4 == 0 && count == N && (reinterpret_cast<uintptr_t>(src) & 15) == 0) {
#pragma unroll
    for (int k = 0; k < N; k += 4) {
      const float4 v = *reinterpret_cast<const float4*>(src + k);
      dst[k] = v.x, dst[k + 1] = v.y, dst[k + 2] = v.z, dst[k + 3] = v.w;
    }
  } else {
#pragma unroll
    for (int k = 0; k < N; ++k) dst[k] = k < count ? src[k] : 0.f;
  }
}

// Lanes per feature-row group in the Gaussian pass (fewer lanes: more pixels per round but more
// registers) and the occupancy that keeps each variant (nearly) free of spills. Measured on an
// H100 (experiments/results/bench_rasterizer.md): for 64 channels, groups of 4 lanes (8 pixels
// per round) at 3 blocks/SM beat groups of 8 at 4 blocks/SM by 9%, and a batch of 32 Gaussians
// was slower than 16.
template <int CP>
constexpr int kBackwardGroupLanes = CP >= 128 ? 8 : 4;
template <int CP>
constexpr int kBackwardBlocksPerSM = CP >= 128 ? 2 : CP / kBackwardGroupLanes<CP> > 8 ? 3 : 4;

template <int CP, bool kFeatureGeometry>
__global__ void __launch_bounds__(kThreads, kFeatureGeometry ? 1 : kBackwardBlocksPerSM<CP>)
    backward_kernel(RasterInputs views, const int32_t* tile_offsets, const int32_t* gids,
                    const float* trans, const int32_t* last_in, RasterCotangents cotangents,
                    RasterGrads all_grads) {
  // Feature gradients: lane groups take several contributing pixels per round, each lane a
  // slice of kGroupChannels channels of its group's pixel row.
  constexpr int kGroupLanes = kBackwardGroupLanes<CP>;
  constexpr int kGroups = 32 / kGroupLanes;
  constexpr int kGroupChannels = CP / kGroupLanes;
  extern __shared__ __align__(16) float feats_s[];    // [kBackwardBatch][CP] (geometry mode)
  // Static arrays (not pointers into dynamic memory) keep the accesses in the shared state space.
  __shared__ float w_s[kBackwardBatch][kThreads];     // pair weight
  __shared__ float dsig_s[kBackwardBatch][kThreads];  // pair dL/dsigma
  __shared__ uint8_t pixel_list[kWarps][kThreads];    // contributing pixels of a warp's Gaussian
  __shared__ Splat splats[kBackwardBatch];
  __shared__ unsigned mask_s[kBackwardBatch][kWarps];  // ballot of w != 0 per (Gaussian, warp)
  __shared__ float4 g_pix_s[kThreads];                  // dL/d(rgb, depth) per pixel
  __shared__ int stop;
  __shared__ int next_gaussian;  // work queue of the Gaussian pass (balances large splats)

  const int64_t view = blockIdx.y;
  const RasterInputs in = views.view(view);
  const RasterCotangents cot = cotangents.view(view);
  const RasterGrads grads = all_grads.view(view, in.num_gaussians, in.channels);
  tile_offsets += view * (gridDim.x + 1);
  trans += view * in.width * in.height;
  last_in += view * in.width * in.height;
  const int tile = blockIdx.x, ntx = tiles_x(in.width);
  const int tile_x0 = (tile % ntx) * kTile, tile_y0 = (tile / ntx) * kTile;
  const int p = threadIdx.x, lane = p % 32, warp = p / 32;
  const int x = tile_x0 + p % kTile, y = tile_y0 + p / kTile;
  const bool inside = x < in.width && y < in.height;
  const float px = x + 0.5f, py = y + 0.5f;
  const int64_t pix = int64_t(y) * in.width + x;
  const int begin = tile_offsets[tile];

  const float t_final = inside ? trans[pix] : 1.f;
  const int last = inside ? last_in[pix] : begin;
  const float g_trans = inside ? cot.trans[pix] : 0.f;
  const float g_rgb[3] = {inside ? cot.rgb[3 * pix] : 0.f, inside ? cot.rgb[3 * pix + 1] : 0.f,
                          inside ? cot.rgb[3 * pix + 2] : 0.f};
  const float g_depth = inside ? cot.depth[pix] : 0.f;
  g_pix_s[p] = make_float4(g_rgb[0], g_rgb[1], g_rgb[2], g_depth);
  if (p == 0) stop = begin;
  __syncthreads();
  atomicMax(&stop, last);
  __syncthreads();

  float t = t_final, s_rgb[3] = {0.f, 0.f, 0.f}, s_depth = 0.f;
  float s_feat[kFeatureGeometry ? CP : 1];
#pragma unroll
  for (int c = 0; c < (kFeatureGeometry ? CP : 1); ++c) s_feat[c] = 0.f;

  for (int batch_end = stop; batch_end > begin; batch_end -= kBackwardBatch) {
    const int batch_start = max(begin, batch_end - kBackwardBatch);
    const int nb = batch_end - batch_start;
    __syncthreads();  // the previous round's Gaussian pass is done with shared memory
    if (p < nb) load_splat(in, gids[batch_start + p], &splats[p]);
    if (p == 0) next_gaussian = kWarps;
    if (kFeatureGeometry) load_features<CP>(in, gids + batch_start, nb, feats_s);
    __syncthreads();

    // 1. Pixel pass, back to front. A warp whose pixels all ended before this batch only clears
    // its ballots (pair values are read only where a ballot bit is set).
    if (__all_sync(kFullMask, last <= batch_start)) {
      if (lane < nb) mask_s[lane][warp] = 0u;
    } else
    for (int j = nb - 1; j >= 0; --j) {
      const Splat& s = splats[j];
      float w = 0.f, d_sigma = 0.f;
      if (batch_start + j < last && covers(s, x, y)) {
        const SplatEval e = splat_eval(s.mean, s.conic, s.opacity, px, py);
        if (e.alpha > 0.f) {
          const float r = 1.f / (1.f - e.alpha);
          t = transmittance_in_front(t, r);
          w = e.alpha * t;
          float d_alpha = transmittance_dalpha(t_final, g_trans, r);
          for (int c = 0; c < 3; ++c) {
            d_alpha += channel_dalpha(s.color[c], s_rgb[c], g_rgb[c], t, r);
            s_rgb[c] += w * s.color[c];
          }
          d_alpha += channel_dalpha(s.depth, s_depth, g_depth, t, r);
          s_depth += w * s.depth;
          if (kFeatureGeometry) {
            const float* g_feat = cot.features + pix * in.channels;
#pragma unroll
            for (int c = 0; c < CP; ++c) {
              const float f = feats_s[j * CP + c];
              d_alpha += channel_dalpha(f, s_feat[c], c < in.channels ? g_feat[c] : 0.f, t, r);
              s_feat[c] += w * f;
            }
          }
          d_sigma = splat_dsigma(e, d_alpha);
        }
      }
      w_s[j][p] = w;
      dsig_s[j][p] = d_sigma;
      const unsigned ballot = __ballot_sync(kFullMask, w != 0.f);
      if (lane == 0) mask_s[j][warp] = ballot;
    }
    __syncthreads();

    // 2. Gaussian pass: each warp takes Gaussian `warp` first, then the next unclaimed one.
    for (int j = warp; j < nb; j = lane == 0 ? atomicAdd(&next_gaussian, 1) : 0,
             j = __shfl_sync(kFullMask, j, 0)) {
      const Splat& s = splats[j];
      // Mask words (2 pixel rows each) the Gaussian's box covers within the tile. Lanes handle
      // their own pixel of each word and list it (ranked by popcount) for the feature pass.
      const int word0 = max(s.y0 - tile_y0, 0) / 2, word1 = min(s.y1 - tile_y0, kTile - 1) / 2;
      float acc[16];
#pragma unroll
      for (int k = 0; k < 16; ++k) acc[k] = 0.f;
      unsigned any = 0;
      int listed = 0;
      __syncwarp();  // the previous Gaussian's list has been read
      for (int wi = word0; wi <= word1; ++wi) {
        const unsigned m = mask_s[j][wi];
        any |= m;
        const int q = wi * 32 + lane;
        if (m >> lane & 1u) {
          const float w = w_s[j][q], ds = dsig_s[j][q];
          const float dx = s.mean.x - (tile_x0 + q % kTile + 0.5f);
          const float dy = s.mean.y - (tile_y0 + q / kTile + 0.5f);
          sigma_backward(dx, dy, s.conic, ds, acc, acc + 2);
          acc[5] += ds;
          const float4 g = g_pix_s[q];
          acc[6] += w * g.x;
          acc[7] += w * g.y;
          acc[8] += w * g.z;
          acc[9] += w * g.w;
          pixel_list[warp][listed + __popc(m & ((1u << lane) - 1u))] = uint8_t(q);
        }
        listed += __popc(m);
      }
      if (!any) continue;  // uniform across the warp
      // Lanes 2i hold the total of value i: mean2d(2) conic(3) sum dsigma(1) colour(3) depth(1).
      float total = warp_reduce_scatter16(acc, lane);
      const int value = lane / 2;
      const int64_t g = s.gid;
      if (value == 5) total = opacity_grad(total, s.opacity);
      if (lane % 2 == 0 && value < 10) {
        float* target = value < 2   ? grads.means2d + 2 * g + value
                        : value < 5 ? grads.conics + 3 * g + (value - 2)
                        : value < 6 ? grads.opacities + g
                        : value < 9 ? grads.colors + 3 * g + (value - 6)
                                    : grads.depths + g;
        atomicAdd(target, total);
      }

      const int group = lane / kGroupLanes, first = (lane % kGroupLanes) * kGroupChannels;
      const int count = min(kGroupChannels, in.channels - first);
      float facc[kGroupChannels];
#pragma unroll
      for (int k = 0; k < kGroupChannels; ++k) facc[k] = 0.f;
      __syncwarp();  // the list is complete
      for (int base = 0; base < listed; base += kGroups) {
        if (base + group < listed && count > 0) {
          const int q = pixel_list[warp][base + group];
          const float w = w_s[j][q];
          const int64_t qpix = int64_t(tile_y0 + q / kTile) * in.width + tile_x0 + q % kTile;
          float row[kGroupChannels];
          load_row(cot.features + qpix * in.channels + first, count, row);
#pragma unroll
          for (int k = 0; k < kGroupChannels; ++k) facc[k] += w * row[k];
        }
      }
#pragma unroll
      for (int k = 0; k < kGroupChannels; ++k)
#pragma unroll
        for (int offset = kGroupLanes; offset < 32; offset *= 2)
          facc[k] += __shfl_xor_sync(kFullMask, facc[k], offset);
      // Every group now holds the totals; group i adds channels k = i, i + kGroups, ...
#pragma unroll
      for (int k = 0; k < kGroupChannels; ++k)
        if (k % kGroups == group && k < count)
          atomicAdd(grads.features + g * in.channels + first + k, facc[k]);
    }
  }
}

// Smallest compiled channel width >= C (register arrays need compile-time sizes).
template <typename Fn>
void with_padded_channels(int channels, Fn&& fn) {
  if (channels <= 16) fn(std::integral_constant<int, 16>{});
  else if (channels <= 32) fn(std::integral_constant<int, 32>{});
  else if (channels <= 64) fn(std::integral_constant<int, 64>{});
  else fn(std::integral_constant<int, 128>{});
}

}  // namespace

void rasterize_forward(cudaStream_t stream, const RasterInputs& in, const int32_t* tile_offsets,
                       const int32_t* gids, const RasterOutputs& out) {
  if (in.views == 0) return;
  const dim3 grid(tiles_x(in.width) * tiles_y(in.height), unsigned(in.views));
  with_padded_channels(in.channels, [&](auto cp) {
    forward_kernel<decltype(cp)::value><<<grid, kThreads, 0, stream>>>(in, tile_offsets, gids, out);
  });
}

void rasterize_backward(cudaStream_t stream, const RasterInputs& in, const int32_t* tile_offsets,
                        const int32_t* gids, const float* trans, const int32_t* last,
                        const RasterCotangents& cot, bool feature_geometry,
                        const RasterGrads& grads) {
  const dim3 grid(tiles_x(in.width) * tiles_y(in.height), unsigned(in.views));
  const int64_t n = in.num_gaussians * in.views;
  if (n == 0) return;
  cudaMemsetAsync(grads.means2d, 0, n * 2 * sizeof(float), stream);
  cudaMemsetAsync(grads.conics, 0, n * 3 * sizeof(float), stream);
  cudaMemsetAsync(grads.opacities, 0, n * sizeof(float), stream);
  cudaMemsetAsync(grads.colors, 0, n * 3 * sizeof(float), stream);
  cudaMemsetAsync(grads.depths, 0, n * sizeof(float), stream);
  cudaMemsetAsync(grads.features, 0, n * in.channels * sizeof(float), stream);
  with_padded_channels(in.channels, [&](auto cp) {
    constexpr int CP = decltype(cp)::value;
    auto launch = [&](auto kernel, size_t smem) {
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
      kernel<<<grid, kThreads, smem, stream>>>(in, tile_offsets, gids, trans, last, cot, grads);
    };
    if (feature_geometry)
      launch(backward_kernel<CP, true>, size_t(kBackwardBatch) * CP * sizeof(float));
    else
      launch(backward_kernel<CP, false>, 0);
  });
}

}  // namespace fit3d::cuda
