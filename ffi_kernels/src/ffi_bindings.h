// XLA FFI signatures of the rasterizer stages, the fused attention and the fused segmentation
// loss, shared by the CPU and CUDA handlers so that the
// two libraries expose identical custom calls (fit3d_jax/render/ffi.py calls them by name).
//
// Each binding lists operands, then results, then attributes; a handler's parameters follow the
// same order after its platform context.
#pragma once

#include <initializer_list>
#include <string>
#include <utility>

#include "fit3d/attention.h"
#include "fit3d/cross_entropy.h"
#include "fit3d/raster_args.h"
#include "xla/ffi/api/ffi.h"

#define FIT3D_EXPORT extern "C" __attribute__((visibility("default")))

namespace fit3d::bind {

namespace ffi = xla::ffi;
using F32 = ffi::Buffer<ffi::F32>;
using S32 = ffi::Buffer<ffi::S32>;
using F32Out = ffi::ResultBuffer<ffi::F32>;
using S32Out = ffi::ResultBuffer<ffi::S32>;

// means (N,3), scales (N,3), quats (N,4), opacities (N,), sh (N,K,3), sh_degree (), camera (24,)
// -> means2d (N,2), conics (N,3), depths (N,), colors (N,3), extents (N,2), radii (N,)
template <typename B>
auto project_forward(B b) {
  return std::move(b).template Arg<F32>().template Arg<F32>().template Arg<F32>().template Arg<F32>()
      .template Arg<F32>().template Arg<S32>().template Arg<F32>()
      .template Ret<F32>().template Ret<F32>().template Ret<F32>().template Ret<F32>()
      .template Ret<F32>().template Ret<S32>()
      .template Attr<int32_t>("width").template Attr<int32_t>("height");
}

// The forward operands + cotangents of means2d, conics, depths, colors
// -> d_means (N,3), d_scales (N,3), d_quats (N,4), d_sh (N,K,3)
template <typename B>
auto project_backward(B b) {
  return std::move(b).template Arg<F32>().template Arg<F32>().template Arg<F32>().template Arg<F32>()
      .template Arg<F32>().template Arg<S32>().template Arg<F32>()
      .template Arg<F32>().template Arg<F32>().template Arg<F32>().template Arg<F32>()
      .template Ret<F32>().template Ret<F32>().template Ret<F32>().template Ret<F32>()
      .template Attr<int32_t>("width").template Attr<int32_t>("height");
}

// means2d (N,2), conics (N,3), opacities (N,), colors (N,3), depths (N,), features (N,C),
// extents (N,2) -> rgb (H,W,3), features (H,W,C), depth (H,W), trans (H,W), last (H,W),
// tile_offsets (T+1,), gids (M,), n_isect (1,). gids keeps the sorted list for the backward
// when it fits (M >= n_isect); otherwise the backward bins again.
template <typename B>
auto rasterize_forward(B b) {
  return std::move(b).template Arg<F32>().template Arg<F32>().template Arg<F32>().template Arg<F32>()
      .template Arg<F32>().template Arg<F32>().template Arg<F32>()
      .template Ret<F32>().template Ret<F32>().template Ret<F32>().template Ret<F32>()
      .template Ret<S32>().template Ret<S32>().template Ret<S32>().template Ret<S32>()
      .template Attr<int32_t>("width").template Attr<int32_t>("height");
}

// The forward operands, trans, last, tile_offsets, gids, n_isect and the cotangents of
// rgb, features, depth, trans -> d_means2d, d_conics, d_opacities, d_colors, d_depths, d_features
template <typename B>
auto rasterize_backward(B b) {
  return std::move(b).template Arg<F32>().template Arg<F32>().template Arg<F32>().template Arg<F32>()
      .template Arg<F32>().template Arg<F32>().template Arg<F32>()
      .template Arg<F32>().template Arg<S32>().template Arg<S32>().template Arg<S32>()
      .template Arg<S32>()
      .template Arg<F32>().template Arg<F32>().template Arg<F32>().template Arg<F32>()
      .template Ret<F32>().template Ret<F32>().template Ret<F32>().template Ret<F32>()
      .template Ret<F32>().template Ret<F32>()
      .template Attr<int32_t>("width").template Attr<int32_t>("height")
      .template Attr<bool>("feature_geometry");
}

// q, k, v (B,T,N,H) -> out (B,T,N,H), lse (B,N,T)
template <typename B>
auto attention_forward(B b) {
  return std::move(b).template Arg<F32>().template Arg<F32>().template Arg<F32>()
      .template Ret<F32>().template Ret<F32>()
      .template Attr<float>("scale");
}

// q, k, v, d_out (B,T,N,H), lse, delta (B,N,T) -> dq, dk, dv (B,T,N,H)
template <typename B>
auto attention_backward(B b) {
  return std::move(b).template Arg<F32>().template Arg<F32>().template Arg<F32>()
      .template Arg<F32>().template Arg<F32>().template Arg<F32>()
      .template Ret<F32>().template Ret<F32>().template Ret<F32>()
      .template Attr<float>("scale");
}

// logits (..., w, C), labels (..., W), tap_index, tap_weight (W, 2), segments (w + 1,)
// -> nll (...), grad (..., w, C)
template <typename B>
auto cross_entropy(B b) {
  return std::move(b).template Arg<F32>().template Arg<S32>().template Arg<S32>().template Arg<F32>()
      .template Arg<S32>()
      .template Ret<F32>().template Ret<F32>()
      .template Attr<int32_t>("ignore_index");
}

// jax.vmap over the rasterizer calls (vmap_method="expand_dims") prepends batch dimensions to
// every operand, of size 1 where an operand is not batched; results carry the whole batch. A
// call then renders `views` views (1 without vmap) in one go.
template <typename Buf>
int64_t leading_elements(const Buf& b, size_t rank) {
  const auto dims = b.dimensions();
  int64_t n = 1;
  for (size_t i = 0; i + rank < dims.size(); ++i) n *= dims[i];
  return n;
}

template <typename Buf>
int64_t dim_from_end(const Buf& b, size_t k) {
  const auto dims = b.dimensions();
  return dims.size() >= k ? dims[dims.size() - k] : 0;
}

struct Batch {
  int64_t views;
  std::string error;  // the first operand batched differently from the results

  // Elements between consecutive views of operand `b` (its own dims are the last `rank`):
  // 0 when vmap left it unbatched (one copy serves every view).
  template <typename Buf>
  int64_t stride(const char* name, const Buf& b, size_t rank) {
    const int64_t n = leading_elements(b, rank);
    if (n == views) return views > 0 ? int64_t(b.element_count()) / views : 0;
    if (n == 1) return 0;
    if (error.empty())
      error = std::string(name) + " has " + std::to_string(n) + " batch elements where the call " +
              "renders " + std::to_string(views) + " views (nested jax.vmap must batch an operand " +
              "over all the axes or none)";
    return 0;
  }
};

// The Gaussian operands of both project bindings (the first five) as kernel inputs.
inline GaussianInputs gaussian_inputs(Batch& batch, F32 means, F32 scales, F32 quats,
                                      F32 opacities, F32 sh) {
  GaussianInputs in;
  in.num_gaussians = dim_from_end(means, 2);
  in.sh_coeffs = int(dim_from_end(sh, 2));
  in.means = means.typed_data();
  in.scales = scales.typed_data();
  in.quats = quats.typed_data();
  in.opacities = opacities.typed_data();
  in.sh = sh.typed_data();
  in.views = batch.views;
  in.stride = {batch.stride("means", means, 2), batch.stride("scales", scales, 2),
               batch.stride("quats", quats, 2), batch.stride("opacities", opacities, 1),
               batch.stride("sh", sh, 3)};
  return in;
}

// The rasterizer operands (the first seven of both rasterize bindings) as kernel inputs.
inline RasterInputs raster_inputs(Batch& batch, F32 means2d, F32 conics, F32 opacities,
                                  F32 colors, F32 depths, F32 features, F32 extents,
                                  int32_t width, int32_t height) {
  RasterInputs in;
  in.num_gaussians = dim_from_end(means2d, 2);
  in.channels = int(dim_from_end(features, 1));
  in.width = width;
  in.height = height;
  in.means2d = means2d.typed_data();
  in.conics = conics.typed_data();
  in.opacities = opacities.typed_data();
  in.colors = colors.typed_data();
  in.depths = depths.typed_data();
  in.features = features.typed_data();
  in.extents = extents.typed_data();
  in.views = batch.views;
  in.stride = {batch.stride("means2d", means2d, 2), batch.stride("conics", conics, 2),
               batch.stride("opacities", opacities, 1), batch.stride("colors", colors, 2),
               batch.stride("depths", depths, 1), batch.stride("features", features, 2),
               batch.stride("extents", extents, 2)};
  return in;
}

// The pixel cotangents of the rasterize backward.
inline RasterCotangents raster_cotangents(Batch& batch, F32 d_rgb, F32 d_feat, F32 d_depth,
                                          F32 d_trans) {
  return {d_rgb.typed_data(), d_feat.typed_data(), d_depth.typed_data(), d_trans.typed_data(),
          {batch.stride("d_rgb", d_rgb, 3), batch.stride("d_features", d_feat, 3),
           batch.stride("d_depth", d_depth, 2), batch.stride("d_trans", d_trans, 2)}};
}

inline ffi::Error invalid(const std::string& msg) {
  return ffi::Error::InvalidArgument("fit3d_jax rasterizer: " + msg);
}

// The (batch, tokens, heads, head_dim) shape that q, k and v share, or an error naming the
// operand that breaks it; a build that takes one head_dim only passes it as `only_head_dim`.
inline ffi::Error attention_shape(F32 q, F32 k, F32 v, float scale, AttentionShape* s,
                                  int64_t only_head_dim = 0) {
  const auto dims = q.dimensions();
  if (dims.size() != 4 || dims[1] < 1)
    return ffi::Error::InvalidArgument(
        "fit3d_jax attention: q must be (batch, tokens >= 1, heads, head_dim)");
  if (only_head_dim && dims[3] != only_head_dim)
    return ffi::Error::InvalidArgument(
        "fit3d_jax attention: the CUDA kernel takes head_dim " + std::to_string(only_head_dim) +
        " (every DINOv2 ViT), q has " + std::to_string(dims[3]) + "; use XLA attention");
  for (auto [name, x] : {std::pair{"k", &k}, std::pair{"v", &v}}) {
    const auto other = x->dimensions();
    bool same = other.size() == dims.size();
    for (size_t i = 0; same && i < dims.size(); ++i) same = other[i] == dims[i];
    if (!same)
      return ffi::Error::InvalidArgument(std::string("fit3d_jax attention: ") + name +
                                         " must have q's shape (self-attention)");
  }
  *s = {dims[0], dims[1], dims[2], dims[3], scale};
  return ffi::Error::Success();
}

template <typename Buf>
bool has_dims(const Buf& b, std::initializer_list<int64_t> want) {
  const auto dims = b.dimensions();
  if (dims.size() != want.size()) return false;
  size_t i = 0;
  for (int64_t d : want) if (dims[i++] != d) return false;
  return true;
}

// The fused loss's shape and pointers, or an error naming the operand that does not fit.
inline ffi::Error cross_entropy_args(F32 logits, S32 labels, S32 tap_index, F32 tap_weight,
                                     S32 segments, F32Out nll, F32Out grad, int32_t ignore_index,
                                     CrossEntropyShape* s, CrossEntropyArgs* a) {
  const auto fail = [](const std::string& m) {
    return ffi::Error::InvalidArgument("fit3d_jax cross_entropy: " + m);
  };
  if (logits.dimensions().size() < 2) return fail("logits must be (..., in_width, classes)");
  const int64_t rows = leading_elements(logits, 2), w = dim_from_end(logits, 2);
  const int64_t classes = dim_from_end(logits, 1), width = dim_from_end(labels, 1);
  if (labels.dimensions().size() != logits.dimensions().size() - 1 ||
      leading_elements(labels, 1) != rows)
    return fail("labels must be (..., out_width) over the rows of logits (..., in_width, classes)");
  if (!has_dims(tap_index, {width, 2}) || !has_dims(tap_weight, {width, 2}))
    return fail("tap_index and tap_weight must be (out_width, 2) = (" + std::to_string(width) + ", 2)");
  if (!has_dims(segments, {w + 1}))
    return fail("segments must be (in_width + 1,) = (" + std::to_string(w + 1) + ",)");
  if (width > 0 && w == 0) return fail("logits have no columns to interpolate");
  *s = {rows, w, width, classes, ignore_index};
  *a = {logits.typed_data(), labels.typed_data(), tap_index.typed_data(), tap_weight.typed_data(),
        segments.typed_data(), nll->typed_data(), grad->typed_data()};
  return ffi::Error::Success();
}

inline ffi::Error batch_error(const Batch& batch) {
  return batch.error.empty() ? ffi::Error::Success() : invalid(batch.error);
}

// `index` counts over the views of the call: view index / N, Gaussian index % N.
inline ffi::Error nonfinite_error(long long index, long long num_gaussians, long long views) {
  const std::string where = views > 1 ? "view " + std::to_string(index / num_gaussians) + ": " : "";
  return invalid(where + "Gaussian " + std::to_string(index % num_gaussians) +
                 " has a non-finite rasterizer input (NaN/Inf in its mean, scale, rotation, "
                 "opacity, SH or projected values); fix the parameters or drop it.");
}

inline ffi::Error too_many_intersections(long long n) {
  return ffi::Error(ffi::ErrorCode::kResourceExhausted,
                    "fit3d_jax rasterizer: " + std::to_string(n) +
                        " tile intersections exceed the int32 index range; render at a lower "
                        "resolution, fewer Gaussians or fewer views (vmap) per call.");
}

}  // namespace fit3d::bind

// Defines an exported handler symbol; declared first with default visibility because the
// libraries are built with -fvisibility=hidden. Optional last argument: the handler's traits.
#define FIT3D_HANDLER(symbol, impl, ...)                                                  \
  FIT3D_EXPORT XLA_FFI_Error* symbol(XLA_FFI_CallFrame* call_frame);                      \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(symbol, impl, __VA_ARGS__)

// ABI tag checked by fit3d_jax/kernels.py against the running jaxlib before registration.
#define FIT3D_DEFINE_ABI_QUERY(platform_name)                                               \
  FIT3D_EXPORT int fit3d_ffi_api_version() {                                                \
    return XLA_FFI_API_MAJOR * 1000 + XLA_FFI_API_MINOR;                                    \
  }                                                                                        \
  FIT3D_EXPORT const char* fit3d_platform() { return platform_name; }
