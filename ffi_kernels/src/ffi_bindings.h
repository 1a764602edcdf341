// XLA FFI signatures of the rasterizer stages, shared by the CPU and CUDA handlers so that the
// two libraries expose identical custom calls (fit3d_jax/render/ffi.py calls them by name).
//
// Each binding lists operands, then results, then attributes; a handler's parameters follow the
// same order after its platform context.
#pragma once

#include <string>
#include <utility>

#include "fit3d/attention.h"
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

inline int64_t rows(const F32& b) { return b.dimensions().size() ? b.dimensions()[0] : 0; }

// The Gaussian operands of both project bindings (the first five) as kernel inputs.
inline GaussianInputs gaussian_inputs(F32 means, F32 scales, F32 quats, F32 opacities, F32 sh) {
  GaussianInputs in;
  in.num_gaussians = rows(means);
  in.sh_coeffs = int(sh.dimensions()[1]);
  in.means = means.typed_data();
  in.scales = scales.typed_data();
  in.quats = quats.typed_data();
  in.opacities = opacities.typed_data();
  in.sh = sh.typed_data();
  return in;
}

// The rasterizer operands (the first seven of both rasterize bindings) as kernel inputs.
inline RasterInputs raster_inputs(F32 means2d, F32 conics, F32 opacities, F32 colors, F32 depths,
                                  F32 features, F32 extents, int32_t width, int32_t height) {
  RasterInputs in;
  in.num_gaussians = rows(means2d);
  in.channels = int(features.dimensions()[1]);
  in.width = width;
  in.height = height;
  in.means2d = means2d.typed_data();
  in.conics = conics.typed_data();
  in.opacities = opacities.typed_data();
  in.colors = colors.typed_data();
  in.depths = depths.typed_data();
  in.features = features.typed_data();
  in.extents = extents.typed_data();
  return in;
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

inline ffi::Error nonfinite_error(long long index) {
  return invalid("Gaussian " + std::to_string(index) +
                 " has a non-finite rasterizer input (NaN/Inf in its mean, scale, rotation, "
                 "opacity, SH or projected values); fix the parameters or drop it.");
}

inline ffi::Error too_many_intersections(long long n) {
  return ffi::Error(ffi::ErrorCode::kResourceExhausted,
                    "fit3d_jax rasterizer: " + std::to_string(n) +
                        " tile intersections exceed the int32 index range; render at a lower "
                        "resolution or with fewer Gaussians per call.");
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
