// XLA FFI handlers of the CUDA build. Work is launched on XLA's stream; temporary memory comes
// from XLA's scratch allocator. The rasterizer synchronises once per call (for all the views of
// a vmap batch) to read the number of tile intersections, so its handlers are not declared
// CUDA-graph compatible; attention's and the loss's are.
#include "cuda/kernels.cuh"
#include "ffi_bindings.h"

namespace fit3d {
namespace {

using namespace bind;  // NOLINT: F32, S32, F32Out, S32Out, ffi
using Stream = ffi::PlatformStream<cudaStream_t>;

constexpr int64_t kAttentionHeadDim = 64;

ffi::Error status(const std::string& err) {
  return err.empty() ? ffi::Error::Success() : ffi::Error::Internal("fit3d_jax CUDA: " + err);
}

// Grid y is the view, at most 65535 of them.
ffi::Error check_views(const Batch& batch) {
  if (batch.views > 65535) return invalid("at most 65535 views per call (vmap), got " + std::to_string(batch.views));
  return batch_error(batch);
}

cuda::ProjectArgs project_args(Batch& batch, F32 means, F32 scales, F32 quats, F32 opacities,
                               F32 sh, S32 sh_degree, F32 camera, int32_t width, int32_t height) {
  return {gaussian_inputs(batch, means, scales, quats, opacities, sh), sh_degree.typed_data(),
          camera.typed_data(), width, height, batch.stride("sh_degree", sh_degree, 0),
          batch.stride("cam_params", camera, 1)};
}

ffi::Error ProjectForward(cudaStream_t stream, F32 means, F32 scales, F32 quats, F32 opacities,
                          F32 sh, S32 sh_degree, F32 camera, F32Out means2d, F32Out conics,
                          F32Out depths, F32Out colors, F32Out extents, S32Out radii,
                          int32_t width, int32_t height) {
  Batch batch{leading_elements(*means2d, 2), {}};
  const cuda::ProjectArgs a =
      project_args(batch, means, scales, quats, opacities, sh, sh_degree, camera, width, height);
  if (ffi::Error e = check_views(batch); e.failure()) return e;
  cuda::project_forward(stream, a, means2d->typed_data(), conics->typed_data(),
                        depths->typed_data(), colors->typed_data(), extents->typed_data(),
                        radii->typed_data());
  return status(cuda::last_error("project_forward"));
}

ffi::Error ProjectBackward(cudaStream_t stream, F32 means, F32 scales, F32 quats, F32 opacities,
                           F32 sh, S32 sh_degree, F32 camera, F32 d_means2d, F32 d_conics,
                           F32 d_depths, F32 d_colors, F32Out g_means, F32Out g_scales,
                           F32Out g_quats, F32Out g_sh, int32_t width, int32_t height) {
  Batch batch{leading_elements(*g_means, 2), {}};
  const cuda::ProjectArgs a =
      project_args(batch, means, scales, quats, opacities, sh, sh_degree, camera, width, height);
  const cuda::ProjectCotangents cot{
      d_means2d.typed_data(), d_conics.typed_data(), d_depths.typed_data(), d_colors.typed_data(),
      {batch.stride("d_means2d", d_means2d, 2), batch.stride("d_conics", d_conics, 2),
       batch.stride("d_depths", d_depths, 1), batch.stride("d_colors", d_colors, 2)}};
  if (ffi::Error e = check_views(batch); e.failure()) return e;
  cuda::project_backward(stream, a, cot, g_means->typed_data(), g_scales->typed_data(),
                         g_quats->typed_data(), g_sh->typed_data());
  return status(cuda::last_error("project_backward"));
}


void* scratch_allocate(void* ctx, size_t bytes) {
  // XLA caps scratch alignment at 16 bytes (its allocator returns more aligned blocks anyway).
  auto r = static_cast<ffi::ScratchAllocator*>(ctx)->Allocate(bytes, 16);
  return r.has_value() ? *r : nullptr;
}

// Bins (all views at once) and reports problems as FFI errors.
ffi::Error bin(cudaStream_t stream, ffi::ScratchAllocator& scratch, const RasterInputs& in,
               int32_t* tile_offsets, int32_t* gids_out, int64_t capacity, int32_t* view_counts,
               int64_t* n_isect, const int32_t** sorted) {
  if (in.channels < 1 || in.channels > kMaxChannels)
    return invalid("features must have 1.." + std::to_string(kMaxChannels) + " channels");
  int64_t first_bad = -1;
  const std::string err = cuda::bin_gaussians(stream, in, {scratch_allocate, &scratch}, tile_offsets,
                                              gids_out, capacity, view_counts, n_isect, sorted,
                                              &first_bad);
  if (!err.empty()) return status(err);
  if (first_bad >= 0) return nonfinite_error(first_bad, in.num_gaussians, in.views);
  if (*n_isect > INT32_MAX) return too_many_intersections(*n_isect);
  return ffi::Error::Success();
}

// The views share one sorted list: row b of tile_offsets (views, T + 1) indexes it for view b,
// gids (views, M) keeps it whole when it fits all views' capacity (total <= views * M), and
// n_isect[b] is view b's share.
ffi::Error RasterizeForward(cudaStream_t stream, ffi::ScratchAllocator scratch, F32 means2d,
                            F32 conics, F32 opacities, F32 colors, F32 depths, F32 features,
                            F32 extents, F32Out rgb, F32Out feat, F32Out depth, F32Out trans,
                            S32Out last, S32Out tile_offsets, S32Out gids, S32Out n_isect,
                            int32_t width, int32_t height) {
  Batch batch{leading_elements(*rgb, 3), {}};
  const RasterInputs in = raster_inputs(batch, means2d, conics, opacities, colors, depths, features,
                                        extents, width, height);
  if (ffi::Error e = check_views(batch); e.failure()) return e;
  int64_t total = 0;
  const int32_t* sorted = nullptr;
  if (ffi::Error e = bin(stream, scratch, in, tile_offsets->typed_data(), gids->typed_data(),
                         int64_t(gids->element_count()), n_isect->typed_data(), &total, &sorted);
      e.failure())
    return e;
  cuda::rasterize_forward(stream, in, tile_offsets->typed_data(), sorted,
                          {rgb->typed_data(), feat->typed_data(), depth->typed_data(),
                           trans->typed_data(), last->typed_data()});
  return status(cuda::last_error("rasterize_forward"));
}

ffi::Error RasterizeBackward(cudaStream_t stream, ffi::ScratchAllocator scratch, F32 means2d,
                             F32 conics, F32 opacities, F32 colors, F32 depths, F32 features,
                             F32 extents, F32 trans, S32 last, S32 tile_offsets, S32 gids,
                             S32 n_isect, F32 d_rgb, F32 d_feat, F32 d_depth, F32 d_trans,
                             F32Out g_means2d, F32Out g_conics, F32Out g_opacities,
                             F32Out g_colors, F32Out g_depths, F32Out g_features, int32_t width,
                             int32_t height, bool feature_geometry) {
  Batch batch{leading_elements(*g_means2d, 2), {}};
  const RasterInputs in = raster_inputs(batch, means2d, conics, opacities, colors, depths, features,
                                        extents, width, height);
  const RasterCotangents cot = raster_cotangents(batch, d_rgb, d_feat, d_depth, d_trans);
  if (ffi::Error e = check_views(batch); e.failure()) return e;
  if (batch.views == 0) return ffi::Error::Success();
  // The list's length over all views: the end of the last view's row of offsets.
  const int num_tiles = tiles_x(width) * tiles_y(height);
  int32_t total = 0;
  cudaMemcpyAsync(&total, tile_offsets.typed_data() + batch.views * (num_tiles + 1) - 1,
                  sizeof(total), cudaMemcpyDeviceToHost, stream);
  cudaStreamSynchronize(stream);
  const int32_t* sorted = gids.typed_data();
  if (int64_t(total) > int64_t(gids.element_count())) {
    // The forward's list did not fit its capacity: bin again (deterministic, same list).
    auto offsets = scratch.Allocate(size_t(batch.views) * (num_tiles + 1) * sizeof(int32_t), 16);
    if (!offsets.has_value()) return status("out of device memory for re-binning");
    int64_t again = 0;
    if (ffi::Error e = bin(stream, scratch, in, static_cast<int32_t*>(*offsets), nullptr, 0,
                           nullptr, &again, &sorted);
        e.failure())
      return e;
  }
  cuda::rasterize_backward(
      stream, in, tile_offsets.typed_data(), sorted, trans.typed_data(), last.typed_data(), cot,
      feature_geometry,
      {g_means2d->typed_data(), g_conics->typed_data(), g_opacities->typed_data(),
       g_colors->typed_data(), g_depths->typed_data(), g_features->typed_data()});
  return status(cuda::last_error("rasterize_backward"));
}

ffi::Error AttentionForward(cudaStream_t stream, F32 q, F32 k, F32 v, F32Out out, F32Out lse,
                            float scale) {
  AttentionShape s;
  if (ffi::Error e = attention_shape(q, k, v, scale, &s, kAttentionHeadDim); e.failure()) return e;
  return status(cuda::attention_forward(stream, s, q.typed_data(), k.typed_data(), v.typed_data(),
                                        out->typed_data(), lse->typed_data()));
}

ffi::Error AttentionBackward(cudaStream_t stream, F32 q, F32 k, F32 v, F32 dout, F32 lse,
                             F32 delta, F32Out dq, F32Out dk, F32Out dv, float scale) {
  AttentionShape s;
  if (ffi::Error e = attention_shape(q, k, v, scale, &s, kAttentionHeadDim); e.failure()) return e;
  return status(cuda::attention_backward(stream, s, q.typed_data(), k.typed_data(), v.typed_data(),
                                         dout.typed_data(), lse.typed_data(), delta.typed_data(),
                                         dq->typed_data(), dk->typed_data(), dv->typed_data()));
}

ffi::Error CrossEntropy(cudaStream_t stream, F32 logits, S32 labels, S32 tap_index, F32 tap_weight,
                        S32 segments, F32Out nll, F32Out grad, int32_t ignore_index) {
  CrossEntropyShape s;
  CrossEntropyArgs a;
  if (ffi::Error e = cross_entropy_args(logits, labels, tap_index, tap_weight, segments, nll, grad,
                                        ignore_index, &s, &a);
      e.failure())
    return e;
  return status(cuda::cross_entropy(stream, s, a));
}

}  // namespace
}  // namespace fit3d

FIT3D_HANDLER(fit3d_project_forward_cuda, fit3d::ProjectForward,
              fit3d::bind::project_forward(xla::ffi::Ffi::Bind().Ctx<fit3d::Stream>()));
FIT3D_HANDLER(fit3d_project_backward_cuda, fit3d::ProjectBackward,
              fit3d::bind::project_backward(xla::ffi::Ffi::Bind().Ctx<fit3d::Stream>()));
FIT3D_HANDLER(fit3d_rasterize_forward_cuda, fit3d::RasterizeForward,
              fit3d::bind::rasterize_forward(xla::ffi::Ffi::Bind()
                                                 .Ctx<fit3d::Stream>()
                                                 .Ctx<xla::ffi::ScratchAllocator>()));
FIT3D_HANDLER(fit3d_rasterize_backward_cuda, fit3d::RasterizeBackward,
              fit3d::bind::rasterize_backward(xla::ffi::Ffi::Bind()
                                                  .Ctx<fit3d::Stream>()
                                                  .Ctx<xla::ffi::ScratchAllocator>()));

FIT3D_HANDLER(fit3d_attention_forward_cuda, fit3d::AttentionForward,
              fit3d::bind::attention_forward(xla::ffi::Ffi::Bind().Ctx<fit3d::Stream>()),
              {xla::ffi::Traits::kCmdBufferCompatible});
FIT3D_HANDLER(fit3d_attention_backward_cuda, fit3d::AttentionBackward,
              fit3d::bind::attention_backward(xla::ffi::Ffi::Bind().Ctx<fit3d::Stream>()),
              {xla::ffi::Traits::kCmdBufferCompatible});

FIT3D_HANDLER(fit3d_cross_entropy_cuda, fit3d::CrossEntropy,
              fit3d::bind::cross_entropy(xla::ffi::Ffi::Bind().Ctx<fit3d::Stream>()),
              {xla::ffi::Traits::kCmdBufferCompatible});

FIT3D_DEFINE_ABI_QUERY("cuda")
