// XLA FFI handlers of the CPU build.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "cpu/kernels.h"
#include "ffi_bindings.h"

namespace fit3d {
namespace {

using namespace bind;  // NOLINT: F32, S32, F32Out, S32Out, ffi

cpu::ProjectArgs project_args(F32 means, F32 scales, F32 quats, F32 opacities, F32 sh,
                              S32 sh_degree, F32 camera, int32_t width, int32_t height) {
  const GaussianInputs gaussians = gaussian_inputs(means, scales, quats, opacities, sh);
  const int max_degree = int(std::lround(std::sqrt(double(gaussians.sh_coeffs)))) - 1;
  return {gaussians, std::clamp(int(sh_degree.typed_data()[0]), 0, max_degree),
          Camera::from_params(camera.typed_data(), width, height)};
}

ffi::Error ProjectForward(F32 means, F32 scales, F32 quats, F32 opacities, F32 sh, S32 sh_degree,
                          F32 camera, F32Out means2d, F32Out conics, F32Out depths, F32Out colors,
                          F32Out extents, S32Out radii, int32_t width, int32_t height) {
  const cpu::ProjectArgs a =
      project_args(means, scales, quats, opacities, sh, sh_degree, camera, width, height);
  cpu::project_forward(a, {means2d->typed_data(), conics->typed_data(), depths->typed_data(),
                           colors->typed_data(), extents->typed_data(), radii->typed_data()});
  return ffi::Error::Success();
}

ffi::Error ProjectBackward(F32 means, F32 scales, F32 quats, F32 opacities, F32 sh, S32 sh_degree,
                           F32 camera, F32 d_means2d, F32 d_conics, F32 d_depths, F32 d_colors,
                           F32Out g_means, F32Out g_scales, F32Out g_quats, F32Out g_sh,
                           int32_t width, int32_t height) {
  const cpu::ProjectArgs a =
      project_args(means, scales, quats, opacities, sh, sh_degree, camera, width, height);
  cpu::project_backward(
      a, {d_means2d.typed_data(), d_conics.typed_data(), d_depths.typed_data(),
          d_colors.typed_data()},
      {g_means->typed_data(), g_scales->typed_data(), g_quats->typed_data(), g_sh->typed_data()});
  return ffi::Error::Success();
}


ffi::Error RasterizeForward(F32 means2d, F32 conics, F32 opacities, F32 colors, F32 depths,
                            F32 features, F32 extents, F32Out rgb, F32Out feat, F32Out depth,
                            F32Out trans, S32Out last, S32Out tile_offsets, S32Out gids,
                            S32Out n_isect, int32_t width, int32_t height) {
  const RasterInputs in = raster_inputs(means2d, conics, opacities, colors, depths, features,
                                        extents, width, height);
  if (const int64_t bad = cpu::first_nonfinite(in); bad >= 0) return nonfinite_error(bad);
  const cpu::Binning bins = cpu::bin_gaussians(in);
  const int64_t total = int64_t(bins.gids.size());
  if (total > INT32_MAX) return too_many_intersections(total);
  std::copy(bins.tile_offsets.begin(), bins.tile_offsets.end(), tile_offsets->typed_data());
  const int64_t capacity = int64_t(gids->element_count());
  if (total <= capacity) std::copy(bins.gids.begin(), bins.gids.end(), gids->typed_data());
  n_isect->typed_data()[0] = int32_t(total);
  cpu::rasterize_forward(in, bins.tile_offsets.data(), bins.gids.data(),
                         {rgb->typed_data(), feat->typed_data(), depth->typed_data(),
                          trans->typed_data(), last->typed_data()});
  return ffi::Error::Success();
}

ffi::Error RasterizeBackward(F32 means2d, F32 conics, F32 opacities, F32 colors, F32 depths,
                             F32 features, F32 extents, F32 trans, S32 last, S32 tile_offsets,
                             S32 gids, S32 n_isect, F32 d_rgb, F32 d_feat, F32 d_depth,
                             F32 d_trans, F32Out g_means2d, F32Out g_conics, F32Out g_opacities,
                             F32Out g_colors, F32Out g_depths, F32Out g_features, int32_t width,
                             int32_t height, bool feature_geometry) {
  const RasterInputs in = raster_inputs(means2d, conics, opacities, colors, depths, features,
                                        extents, width, height);
  // The forward kept the sorted list if it fitted the capacity; otherwise bin again (the sort
  // is deterministic, so the list is the one the forward blended).
  const int64_t total = n_isect.typed_data()[0];
  cpu::Binning rebinned;
  const int32_t* sorted = gids.typed_data();
  if (total > int64_t(gids.element_count())) {
    rebinned = cpu::bin_gaussians(in);
    sorted = rebinned.gids.data();
  }
  cpu::rasterize_backward(
      in, tile_offsets.typed_data(), sorted, trans.typed_data(), last.typed_data(),
      {d_rgb.typed_data(), d_feat.typed_data(), d_depth.typed_data(), d_trans.typed_data()},
      feature_geometry,
      {g_means2d->typed_data(), g_conics->typed_data(), g_opacities->typed_data(),
       g_colors->typed_data(), g_depths->typed_data(), g_features->typed_data()});
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

FIT3D_DEFINE_ABI_QUERY("cpu")
