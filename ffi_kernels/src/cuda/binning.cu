// CUDA tile binning: validate, count, scan, read the total back, emit (tile, depth) keys,
// radix sort (CUB, stable), per-tile offsets. Forward only: the backward reuses the result.
// A batch of views is binned as one image of views x T tiles (the key's tile id is
// view * T + tile), so it costs one count, one host synchronisation and one sort.
#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_scan.cuh>

#include "fit3d/binning.h"
#include "kernels.cuh"

namespace fit3d::cuda {
namespace {

constexpr int kThreads = 256;

unsigned blocks_for(int64_t n) { return unsigned((n + kThreads - 1) / kThreads); }

__device__ Vec2 load2(const float* p, int64_t i) { return {p[2 * i], p[2 * i + 1]}; }

// Gaussian g of view blockIdx.y: counts[view * N + g] = number of tiles it touches;
// *first_bad = smallest such index with a non-finite input (left at ~0 when there is none).
__global__ void count_kernel(RasterInputs views, int64_t* counts, unsigned long long* first_bad) {
  const int64_t g = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const RasterInputs in = views.view(blockIdx.y);
  if (g >= in.num_gaussians) return;
  const int64_t row = in.num_gaussians * blockIdx.y + g;
  if (!raster_inputs_finite(int(g), in.means2d, in.conics, in.opacities, in.colors, in.depths,
                            in.extents)) {
    atomicMin(first_bad, (unsigned long long)row);
    counts[row] = 0;
    return;
  }
  TileRect r;
  counts[row] = tile_rect(load2(in.means2d, g), load2(in.extents, g), in.width, in.height, &r)
                    ? tile_rect_count(r)
                    : 0;
}

__global__ void emit_kernel(RasterInputs views, const int64_t* ends, uint64_t* keys, int32_t* ids) {
  const int64_t g = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const RasterInputs in = views.view(blockIdx.y);
  if (g >= in.num_gaussians) return;
  TileRect r;
  if (!tile_rect(load2(in.means2d, g), load2(in.extents, g), in.width, in.height, &r)) return;
  int64_t k = ends[in.num_gaussians * blockIdx.y + g] - tile_rect_count(r);
  const int tx = tiles_x(in.width);
  const int first_tile = int(blockIdx.y) * tx * tiles_y(in.height);
  const float depth = in.depths[g];
  for (int ty = r.y0; ty <= r.y1; ++ty)
    for (int x = r.x0; x <= r.x1; ++x, ++k) {
      keys[k] = sort_key(first_tile + ty * tx + x, depth);
      ids[k] = int32_t(g);
    }
}

// Row b of tile_offsets (views, T + 1): entry t = first sorted index whose tile id >= b * T + t.
__global__ void tile_offsets_kernel(const uint64_t* keys, int64_t n, int num_tiles, int views,
                                    int32_t* tile_offsets) {
  const int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= int64_t(views) * (num_tiles + 1)) return;
  const int64_t t = (e / (num_tiles + 1)) * num_tiles + e % (num_tiles + 1);
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (int64_t(keys[mid] >> 32) < t) lo = mid + 1; else hi = mid;
  }
  tile_offsets[e] = int32_t(lo);
}

// counts[b] = intersections of view b (the span of its row of offsets).
__global__ void view_counts_kernel(const int32_t* tile_offsets, int num_tiles, int views,
                                   int32_t* counts) {
  const int b = blockIdx.x * blockDim.x + threadIdx.x;
  if (b >= views) return;
  const int32_t* row = tile_offsets + int64_t(b) * (num_tiles + 1);
  counts[b] = row[num_tiles] - row[0];
}

// XLA's allocator returns null for 0 bytes; ask for at least one element.
void* take_bytes(BinningScratch s, size_t bytes) { return s.allocate(s.ctx, bytes > 0 ? bytes : 16); }

template <typename T>
T* take(BinningScratch s, int64_t count) {
  return static_cast<T*>(take_bytes(s, size_t(count > 0 ? count : 1) * sizeof(T)));
}

}  // namespace

std::string bin_gaussians(cudaStream_t stream, const RasterInputs& in, BinningScratch scratch,
                          int32_t* tile_offsets, int32_t* gids_out, int64_t capacity,
                          int32_t* view_counts, int64_t* n_isect, const int32_t** sorted,
                          int64_t* first_bad) {
  const int views = int(in.views);
  const int64_t n = in.num_gaussians * views;  // rows over all views
  const int num_tiles = tiles_x(in.width) * tiles_y(in.height);
  const int64_t offsets_count = int64_t(views) * (num_tiles + 1);
  *first_bad = -1;
  *n_isect = 0;
  auto nothing_visible = [&] {
    cudaMemsetAsync(tile_offsets, 0, size_t(offsets_count) * sizeof(int32_t), stream);
    if (view_counts) cudaMemsetAsync(view_counts, 0, size_t(views) * sizeof(int32_t), stream);
    *sorted = gids_out;
    return last_error("binning");
  };
  if (views == 0) return "";
  if (n == 0) return nothing_visible();
  if (n > INT32_MAX || int64_t(views) * num_tiles >= INT32_MAX)
    return "more than 2^31 Gaussians or tiles over the views of one call; render fewer views per call";
  int64_t* counts = take<int64_t>(scratch, n);
  int64_t* ends = take<int64_t>(scratch, n);
  auto* bad = take<unsigned long long>(scratch, 1);
  if (!counts || !ends || !bad) return "out of device memory for binning";

  const unsigned long long none = ~0ull;
  const dim3 grid(blocks_for(in.num_gaussians), unsigned(views));
  cudaMemsetAsync(bad, 0xff, sizeof(*bad), stream);
  count_kernel<<<grid, kThreads, 0, stream>>>(in, counts, bad);
  size_t scan_bytes = 0;
  cub::DeviceScan::InclusiveSum(nullptr, scan_bytes, counts, ends, int(n), stream);
  void* scan_tmp = take_bytes(scratch, scan_bytes);
  if (!scan_tmp) return "out of device memory for binning";
  cub::DeviceScan::InclusiveSum(scan_tmp, scan_bytes, counts, ends, int(n), stream);

  // The one host synchronisation: output shapes are static, so the sort buffers are sized
  // here, exactly, from the intersection count.
  int64_t total = 0;
  unsigned long long bad_host = 0;
  cudaMemcpyAsync(&total, ends + (n - 1), sizeof(total), cudaMemcpyDeviceToHost, stream);
  cudaMemcpyAsync(&bad_host, bad, sizeof(bad_host), cudaMemcpyDeviceToHost, stream);
  cudaStreamSynchronize(stream);
  if (std::string err = last_error("binning count"); !err.empty()) return err;
  *first_bad = bad_host < none ? int64_t(bad_host) : -1;
  *n_isect = total;
  if (*first_bad >= 0 || total > INT32_MAX) return "";
  if (total == 0) return nothing_visible();

  uint64_t* keys_in = take<uint64_t>(scratch, total);
  uint64_t* keys_alt = take<uint64_t>(scratch, total);
  int32_t* ids_in = take<int32_t>(scratch, total);
  int32_t* ids_alt = total <= capacity ? gids_out : take<int32_t>(scratch, total);
  if (!keys_in || !keys_alt || !ids_in || !ids_alt) return "out of device memory for binning";
  emit_kernel<<<grid, kThreads, 0, stream>>>(in, ends, keys_in, ids_in);

  cub::DoubleBuffer<uint64_t> keys(keys_in, keys_alt);
  cub::DoubleBuffer<int32_t> ids(ids_in, ids_alt);
  const int end_bit = 32 + tile_id_bits(views * num_tiles);
  size_t sort_bytes = 0;
  cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, keys, ids, int(total), 0, end_bit, stream);
  void* sort_tmp = take_bytes(scratch, sort_bytes);
  if (!sort_tmp) return "out of device memory for the sort";
  cub::DeviceRadixSort::SortPairs(sort_tmp, sort_bytes, keys, ids, int(total), 0, end_bit, stream);
  // Keep the result in gids_out when it fits there (the backward reuses it).
  if (total <= capacity && ids.Current() != gids_out)
    cudaMemcpyAsync(gids_out, ids.Current(), size_t(total) * sizeof(int32_t),
                    cudaMemcpyDeviceToDevice, stream);
  *sorted = total <= capacity ? gids_out : ids.Current();
  tile_offsets_kernel<<<blocks_for(offsets_count), kThreads, 0, stream>>>(
      keys.Current(), total, num_tiles, views, tile_offsets);
  if (view_counts)
    view_counts_kernel<<<blocks_for(views), kThreads, 0, stream>>>(tile_offsets, num_tiles, views,
                                                                  view_counts);
  return last_error("binning sort");
}

}  // namespace fit3d::cuda
