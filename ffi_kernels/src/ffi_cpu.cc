// XLA FFI handlers of the CPU build.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "cpu/kernels.h"
#include "ffi_bindings.h"

namespace fit3d {
namespace {

using namespace bind;  // NOLINT: F32, S32, F32Out, S32Out, ffi

// Each handler takes a batch of views (jax.vmap) and runs the single-view stage per view.

cpu::ProjectArgs project_args(const GaussianInputs& gaussians, int32_t sh_degree,
                              const float* camera, int32_t width, int32_t height) {
  const int max_degree = int(std::lround(std::sqrt(double(gaussians.sh_coeffs)))) - 1;
  return {gaussians, std::clamp(int(sh_degree), 0, max_degree),
          Camera::from_params(camera, width, height)};
}

// The projection operands of view b of a batch.
struct ProjectBatch {
  Batch batch;
  GaussianInputs gaussians;
  int64_t degree_stride, camera_stride;

  ProjectBatch(int64_t views, F32 means, F32 scales, F32 quats, F32 opacities, F32 sh,
               S32 sh_degree, F32 camera)
      : batch{views, {}},
        gaussians(gaussian_inputs(batch, means, scales, quats, opacities, sh)),
        degree_stride(batch.stride("sh_degree", sh_degree, 0)),
        camera_stride(batch.stride("cam_params", camera, 1)) {}

  cpu::ProjectArgs view(int64_t b, S32 sh_degree, F32 camera, int32_t width, int32_t height) const {
    return project_args(gaussians.view(b), sh_degree.typed_data()[degree_stride * b],
                        camera.typed_data() + camera_stride * b, width, height);
  }
};

ffi::Error ProjectForward(F32 means, F32 scales, F32 quats, F32 opacities, F32 sh, S32 sh_degree,
                          F32 camera, F32Out means2d, F32Out conics, F32Out depths, F32Out colors,
                          F32Out extents, S32Out radii, int32_t width, int32_t height) {
  const ProjectBatch pb(leading_elements(*means2d, 2), means, scales, quats, opacities, sh,
                        sh_degree, camera);
  if (ffi::Error e = batch_error(pb.batch); e.failure()) return e;
  const int64_t n = pb.gaussians.num_gaussians;
  for (int64_t b = 0; b < pb.batch.views; ++b)
    cpu::project_forward(pb.view(b, sh_degree, camera, width, height),
                         {means2d->typed_data() + 2 * n * b, conics->typed_data() + 3 * n * b,
                          depths->typed_data() + n * b, colors->typed_data() + 3 * n * b,
                          extents->typed_data() + 2 * n * b, radii->typed_data() + n * b});
  return ffi::Error::Success();
}

ffi::Error ProjectBackward(F32 means, F32 scales, F32 quats, F32 opacities, F32 sh, S32 sh_degree,
                           F32 camera, F32 d_means2d, F32 d_conics, F32 d_depths, F32 d_colors,
                           F32Out g_means, F32Out g_scales, F32Out g_quats, F32Out g_sh,
                           int32_t width, int32_t height) {
  ProjectBatch pb(leading_elements(*g_means, 2), means, scales, quats, opacities, sh, sh_degree,
                  camera);
  const int64_t s2 = pb.batch.stride("d_means2d", d_means2d, 2),
                s3 = pb.batch.stride("d_conics", d_conics, 2),
                s1 = pb.batch.stride("d_depths", d_depths, 1),
                sc = pb.batch.stride("d_colors", d_colors, 2);
  if (ffi::Error e = batch_error(pb.batch); e.failure()) return e;
  const int64_t n = pb.gaussians.num_gaussians, k3 = 3 * pb.gaussians.sh_coeffs;
  for (int64_t b = 0; b < pb.batch.views; ++b)
    cpu::project_backward(
        pb.view(b, sh_degree, camera, width, height),
        {d_means2d.typed_data() + s2 * b, d_conics.typed_data() + s3 * b,
         d_depths.typed_data() + s1 * b, d_colors.typed_data() + sc * b},
        {g_means->typed_data() + 3 * n * b, g_scales->typed_data() + 3 * n * b,
         g_quats->typed_data() + 4 * n * b, g_sh->typed_data() + k3 * n * b});
  return ffi::Error::Success();
}

// Per view b: tile offsets in row b of (views, T + 1), the sorted list in the b-th of `views`
// equal slices of gids (when it fits there), its length in n_isect[b].
ffi::Error RasterizeForward(F32 means2d, F32 conics, F32 opacities, F32 colors, F32 depths,
                            F32 features, F32 extents, F32Out rgb, F32Out feat, F32Out depth,
                            F32Out trans, S32Out last, S32Out tile_offsets, S32Out gids,
                            S32Out n_isect, int32_t width, int32_t height) {
  Batch batch{leading_elements(*rgb, 3), {}};
  const RasterInputs in = raster_inputs(batch, means2d, conics, opacities, colors, depths, features,
                                        extents, width, height);
  if (ffi::Error e = batch_error(batch); e.failure()) return e;
  const int64_t views = batch.views, n = in.num_gaussians, pixels = int64_t(width) * height;
  const int num_tiles = tiles_x(width) * tiles_y(height);
  const int64_t capacity = views ? int64_t(gids->element_count()) / views : 0;
  for (int64_t b = 0; b < views; ++b) {
    const RasterInputs v = in.view(b);
    if (const int64_t bad = cpu::first_nonfinite(v); bad >= 0)
      return nonfinite_error(b * n + bad, n, views);
    const cpu::Binning bins = cpu::bin_gaussians(v);
    const int64_t total = int64_t(bins.gids.size());
    if (total > INT32_MAX) return too_many_intersections(total);
    std::copy(bins.tile_offsets.begin(), bins.tile_offsets.end(),
              tile_offsets->typed_data() + (num_tiles + 1) * b);
    if (total <= capacity)
      std::copy(bins.gids.begin(), bins.gids.end(), gids->typed_data() + capacity * b);
    n_isect->typed_data()[b] = int32_t(total);
    const RasterOutputs out{rgb->typed_data(), feat->typed_data(), depth->typed_data(),
                            trans->typed_data(), last->typed_data()};
    cpu::rasterize_forward(v, bins.tile_offsets.data(), bins.gids.data(),
                           out.view(b, pixels, in.channels));
  }
  return ffi::Error::Success();
}

ffi::Error RasterizeBackward(F32 means2d, F32 conics, F32 opacities, F32 colors, F32 depths,
                             F32 features, F32 extents, F32 trans, S32 last, S32 tile_offsets,
                             S32 gids, S32 n_isect, F32 d_rgb, F32 d_feat, F32 d_depth,
                             F32 d_trans, F32Out g_means2d, F32Out g_conics, F32Out g_opacities,
                             F32Out g_colors, F32Out g_depths, F32Out g_features, int32_t width,
                             int32_t height, bool feature_geometry) {
  Batch batch{leading_elements(*g_means2d, 2), {}};
  const RasterInputs in = raster_inputs(batch, means2d, conics, opacities, colors, depths, features,
                                        extents, width, height);
  const RasterCotangents cot = raster_cotangents(batch, d_rgb, d_feat, d_depth, d_trans);
  if (ffi::Error e = batch_error(batch); e.failure()) return e;
  const int64_t views = batch.views, n = in.num_gaussians, pixels = int64_t(width) * height;
  const int num_tiles = tiles_x(width) * tiles_y(height);
  const int64_t capacity = views ? int64_t(gids.element_count()) / views : 0;
  const RasterGrads grads{g_means2d->typed_data(), g_conics->typed_data(),
                          g_opacities->typed_data(), g_colors->typed_data(),
                          g_depths->typed_data(), g_features->typed_data()};
  for (int64_t b = 0; b < views; ++b) {
    const RasterInputs v = in.view(b);
    // The forward kept the sorted list if it fitted the capacity; otherwise bin again (the sort
    // is deterministic, so the list is the one the forward blended).
    cpu::Binning rebinned;
    const int32_t* sorted = gids.typed_data() + capacity * b;
    if (n_isect.typed_data()[b] > capacity) {
      rebinned = cpu::bin_gaussians(v);
      sorted = rebinned.gids.data();
    }
    cpu::rasterize_backward(v, tile_offsets.typed_data() + (num_tiles + 1) * b, sorted,
                            trans.typed_data() + pixels * b, last.typed_data() + pixels * b,
                            cot.view(b), feature_geometry, grads.view(b, n, in.channels));
  }
  return ffi::Error::Success();
}

ffi::Error AttentionForward(F32 q, F32 k, F32 v, F32Out out, F32Out lse, float scale) {
  AttentionShape s;
  if (ffi::Error e = attention_shape(q, k, v, scale, &s); e.failure()) return e;
  cpu::attention_forward(s, q.typed_data(), k.typed_data(), v.typed_data(), out->typed_data(),
                         lse->typed_data());
  return ffi::Error::Success();
}

ffi::Error AttentionBackward(F32 q, F32 k, F32 v, F32 dout, F32 lse, F32 delta, F32Out dq,
                             F32Out dk, F32Out dv, float scale) {
  AttentionShape s;
  if (ffi::Error e = attention_shape(q, k, v, scale, &s); e.failure()) return e;
  cpu::attention_backward(s, q.typed_data(), k.typed_data(), v.typed_data(), dout.typed_data(),
                          lse.typed_data(), delta.typed_data(), dq->typed_data(),
                          dk->typed_data(), dv->typed_data());
  return ffi::Error::Success();
}

// The taps and segments the CUDA build indexes shared memory with: here, where they are
// readable, they are checked to be what fit3d/cross_entropy.h describes.
std::string segment_error(const CrossEntropyShape& s, const CrossEntropyArgs& a) {
  const int32_t* seg = a.segments;
  if (seg[0] != 0 || seg[s.in_width] != s.out_width)
    return "segments must start at 0 and end at out_width";
  for (int64_t j = 0; j < s.in_width; ++j) {
    if (seg[j + 1] < seg[j]) return "segments must ascend (column " + std::to_string(j) + ")";
    for (int32_t x = seg[j]; x < seg[j + 1]; ++x) {
      const int32_t high = a.tap_index[2 * x + 1];
      if (a.tap_index[2 * x] != j || high != a.tap_index[2 * seg[j] + 1] ||
          (high != j + 1 && high != j) || high >= s.in_width)
        return "tap_index row " + std::to_string(x) + " does not continue column " +
               std::to_string(j) + "'s segment (low tap " + std::to_string(j) +
               ", one high tap: the column or the next)";
    }
  }
  return "";
}

ffi::Error CrossEntropy(F32 logits, S32 labels, S32 tap_index, F32 tap_weight, S32 segments,
                        F32Out nll, F32Out grad, int32_t ignore_index) {
  CrossEntropyShape s;
  CrossEntropyArgs a;
  if (ffi::Error e = cross_entropy_args(logits, labels, tap_index, tap_weight, segments, nll, grad,
                                        ignore_index, &s, &a);
      e.failure())
    return e;
  if (const std::string err = segment_error(s, a); !err.empty())
    return ffi::Error::InvalidArgument("fit3d_jax cross_entropy: " + err);
  cpu::cross_entropy(s, a);
  return ffi::Error::Success();
}

}  // namespace
}  // namespace fit3d

FIT3D_HANDLER(fit3d_project_forward_cpu, fit3d::ProjectForward,
                              fit3d::bind::project_forward(xla::ffi::Ffi::Bind()));
FIT3D_HANDLER(fit3d_project_backward_cpu, fit3d::ProjectBackward,
                              fit3d::bind::project_backward(xla::ffi::Ffi::Bind()));
FIT3D_HANDLER(fit3d_rasterize_forward_cpu, fit3d::RasterizeForward,
                              fit3d::bind::rasterize_forward(xla::ffi::Ffi::Bind()));
FIT3D_HANDLER(fit3d_rasterize_backward_cpu, fit3d::RasterizeBackward,
                              fit3d::bind::rasterize_backward(xla::ffi::Ffi::Bind()));

FIT3D_HANDLER(fit3d_attention_forward_cpu, fit3d::AttentionForward,
              fit3d::bind::attention_forward(xla::ffi::Ffi::Bind()));
FIT3D_HANDLER(fit3d_attention_backward_cpu, fit3d::AttentionBackward,
              fit3d::bind::attention_backward(xla::ffi::Ffi::Bind()));

FIT3D_HANDLER(fit3d_cross_entropy_cpu, fit3d::CrossEntropy,
              fit3d::bind::cross_entropy(xla::ffi::Ffi::Bind()));

FIT3D_DEFINE_ABI_QUERY("cpu")
