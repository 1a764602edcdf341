// CPU rasterizer: input validation, tile binning, forward blending and its backward.
#include <algorithm>
#include <numeric>

#include "fit3d/binning.h"
#include "fit3d/blend.h"
#include "kernels.h"
#include "parallel.h"

namespace fit3d::cpu {

namespace {

Vec2 mean2d_of(const RasterInputs& in, int64_t g) {
  return {in.means2d[2 * g], in.means2d[2 * g + 1]};
}
Vec2 extent_of(const RasterInputs& in, int64_t g) {
  return {in.extents[2 * g], in.extents[2 * g + 1]};
}

struct PixelBox {
  int x0, x1, y0, y1;
  bool contains(int x, int y) const { return x >= x0 && x <= x1 && y >= y0 && y <= y1; }
};

// Pixel boxes of all Gaussians (empty box for culled ones), computed once per call.
std::vector<PixelBox> pixel_boxes(const RasterInputs& in) {
  std::vector<PixelBox> boxes(in.num_gaussians);
  parallel_range(in.num_gaussians, [&](int64_t g) {
    PixelBox b{0, -1, 0, -1};
    pixel_rect(mean2d_of(in, g), extent_of(in, g), in.width, in.height, &b.x0, &b.x1, &b.y0,
               &b.y1);
    boxes[g] = b;
  });
  return boxes;
}

// Visits the pixels of tile `tile` that lie inside the image.
template <typename Fn>
void for_each_pixel(const RasterInputs& in, int64_t tile, Fn&& fn) {
  const int tx = int(tile % tiles_x(in.width)), ty = int(tile / tiles_x(in.width));
  for (int y = ty * kTile; y < std::min(in.height, (ty + 1) * kTile); ++y)
    for (int x = tx * kTile; x < std::min(in.width, (tx + 1) * kTile); ++x) fn(x, y);
}

}  // namespace

int64_t first_nonfinite(const RasterInputs& in) {
  for (int64_t g = 0; g < in.num_gaussians; ++g)
    if (!raster_inputs_finite(int(g), in.means2d, in.conics, in.opacities, in.colors, in.depths,
                              in.extents))
      return g;
  return -1;
}

Binning bin_gaussians(const RasterInputs& in) {
  const int64_t n = in.num_gaussians;
  const int num_tiles = tiles_x(in.width) * tiles_y(in.height);
  std::vector<TileRect> rects(n);
  std::vector<int64_t> offsets(n + 1, 0);
  for (int64_t g = 0; g < n; ++g) {
    TileRect r{0, -1, 0, -1};
    const bool hit = tile_rect(mean2d_of(in, g), extent_of(in, g), in.width, in.height, &r);
    rects[g] = r;
    offsets[g + 1] = offsets[g] + (hit ? tile_rect_count(r) : 0);
  }
  const int64_t total = offsets[n];
  std::vector<uint64_t> keys(total);
  std::vector<int32_t> ids(total);
  parallel_range(n, [&](int64_t g) {
    const TileRect& r = rects[g];
    int64_t k = offsets[g];
    for (int ty = r.y0; ty <= r.y1; ++ty)
      for (int tx = r.x0; tx <= r.x1; ++tx, ++k) {
        keys[k] = sort_key(ty * tiles_x(in.width) + tx, in.depths[g]);
        ids[k] = int32_t(g);
      }
  });
  // Stable order by key; keys of one Gaussian are distinct, so ties are broken by id exactly
  // as the stable radix sort of the CUDA build breaks them.
  std::vector<int64_t> order(total);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return keys[a] != keys[b] ? keys[a] < keys[b] : ids[a] < ids[b];
  });
  Binning bins;
  bins.gids.resize(total);
  bins.tile_offsets.assign(num_tiles + 1, 0);
  for (int64_t k = 0; k < total; ++k) {
    bins.gids[k] = ids[order[k]];
    ++bins.tile_offsets[int(keys[order[k]] >> 32) + 1];
  }
  for (int t = 0; t < num_tiles; ++t) bins.tile_offsets[t + 1] += bins.tile_offsets[t];
  return bins;
}

void rasterize_forward(const RasterInputs& in, const int32_t* tile_offsets, const int32_t* gids,
                       const RasterOutputs& out) {
  const int num_tiles = tiles_x(in.width) * tiles_y(in.height);
  const int channels = in.channels;
  const std::vector<PixelBox> boxes = pixel_boxes(in);
  parallel_for(num_tiles, [&](int64_t tile, int) {
    const int32_t begin = tile_offsets[tile], end = tile_offsets[tile + 1];
    for_each_pixel(in, tile, [&](int x, int y) {
      const int64_t pix = int64_t(y) * in.width + x;
      const float px = x + 0.5f, py = y + 0.5f;
      float* feat = out.features + pix * channels;
      std::fill(feat, feat + channels, 0.f);
      float rgb[3] = {0.f, 0.f, 0.f}, depth = 0.f, t = 1.f;
      int32_t last = begin;
      for (int32_t k = begin; k < end; ++k) {
        const int32_t g = gids[k];
        if (!boxes[g].contains(x, y)) continue;
        const SplatEval e =
            splat_eval(mean2d_of(in, g), in.conics + 3 * g, in.opacities[g], px, py);
        if (e.alpha == 0.f) continue;
        const float t_next = t * (1.f - e.alpha);
        if (t_next < kTransmittanceMin) break;
        const float w = e.alpha * t;
        for (int c = 0; c < 3; ++c) rgb[c] += w * in.colors[3 * g + c];
        depth += w * in.depths[g];
        const float* f = in.features + int64_t(g) * channels;
        for (int c = 0; c < channels; ++c) feat[c] += w * f[c];
        t = t_next;
        last = k + 1;
      }
      for (int c = 0; c < 3; ++c) out.rgb[3 * pix + c] = rgb[c];
      out.depth[pix] = depth;
      out.trans[pix] = t;
      out.last[pix] = last;
    });
  });
}

void rasterize_backward(const RasterInputs& in, const int32_t* tile_offsets, const int32_t* gids,
                        const float* trans, const int32_t* last, const RasterCotangents& cot,
                        bool feature_geometry, const RasterGrads& grads) {
  const int64_t n = in.num_gaussians;
  const int num_tiles = tiles_x(in.width) * tiles_y(in.height);
  const int channels = in.channels;
  const std::vector<PixelBox> boxes = pixel_boxes(in);

  // Per-worker accumulators (no atomics), summed at the end. Layout per Gaussian:
  // mean2d(2) conic(3) sum of dL/dsigma(1) colour(3) depth(1) feature(C).
  const int stride = 10 + channels;
  const int workers = num_workers(num_tiles);
  std::vector<std::vector<float>> acc(workers);
  for (auto& a : acc) a.assign(size_t(n) * stride, 0.f);

  parallel_for_static(num_tiles, [&](int64_t tile, int worker) {
    float* a = acc[worker].data();
    const int32_t begin = tile_offsets[tile];
    std::vector<float> s_feat(channels);
    for_each_pixel(in, tile, [&](int x, int y) {
      const int64_t pix = int64_t(y) * in.width + x;
      const float px = x + 0.5f, py = y + 0.5f;
      const float t_final = trans[pix];
      const float g_rgb[3] = {cot.rgb[3 * pix], cot.rgb[3 * pix + 1], cot.rgb[3 * pix + 2]};
      const float g_depth = cot.depth[pix], g_trans = cot.trans[pix];
      const float* g_feat = cot.features + pix * channels;
      float s_rgb[3] = {0.f, 0.f, 0.f}, s_depth = 0.f, t = t_final;
      std::fill(s_feat.begin(), s_feat.end(), 0.f);
      for (int32_t k = last[pix] - 1; k >= begin; --k) {
        const int32_t g = gids[k];
        if (!boxes[g].contains(x, y)) continue;
        const float* conic = in.conics + 3 * g;
        const SplatEval e = splat_eval(mean2d_of(in, g), conic, in.opacities[g], px, py);
        if (e.alpha == 0.f) continue;
        const float r = 1.f / (1.f - e.alpha);
        t = transmittance_in_front(t, r);
        const float w = e.alpha * t;
        const float* color = in.colors + 3 * g;
        const float* f = in.features + int64_t(g) * channels;
        float* ag = a + int64_t(g) * stride;

        float d_alpha = transmittance_dalpha(t_final, g_trans, r);
        for (int c = 0; c < 3; ++c) {
          d_alpha += channel_dalpha(color[c], s_rgb[c], g_rgb[c], t, r);
          s_rgb[c] += w * color[c];
          ag[6 + c] += w * g_rgb[c];
        }
        d_alpha += channel_dalpha(in.depths[g], s_depth, g_depth, t, r);
        s_depth += w * in.depths[g];
        ag[9] += w * g_depth;
        for (int c = 0; c < channels; ++c) {
          if (feature_geometry) {
            d_alpha += channel_dalpha(f[c], s_feat[c], g_feat[c], t, r);
            s_feat[c] += w * f[c];
          }
          ag[10 + c] += w * g_feat[c];
        }
        const float d_sigma = splat_dsigma(e, d_alpha);
        sigma_backward(e.dx, e.dy, conic, d_sigma, ag, ag + 2);
        ag[5] += d_sigma;
      }
    });
  });

  parallel_range(n, [&](int64_t g) {
    float sum[10 + kMaxChannels];
    std::fill(sum, sum + stride, 0.f);
    for (const auto& a : acc)
      for (int k = 0; k < stride; ++k) sum[k] += a[g * stride + k];
    grads.means2d[2 * g] = sum[0];
    grads.means2d[2 * g + 1] = sum[1];
    for (int c = 0; c < 3; ++c) grads.conics[3 * g + c] = sum[2 + c];
    grads.opacities[g] = opacity_grad(sum[5], in.opacities[g]);
    for (int c = 0; c < 3; ++c) grads.colors[3 * g + c] = sum[6 + c];
    grads.depths[g] = sum[9];
    for (int c = 0; c < channels; ++c) grads.features[g * channels + c] = sum[10 + c];
  });
}

}  // namespace fit3d::cpu
