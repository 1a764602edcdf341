// Fused float32 softmax attention on tensor cores: the forward and, beside it, the backward.
//
// Every float32 product runs as three TF32 products (3xTF32: hi*hi + hi*lo + lo*hi with
// x = hi + lo), the scheme of CUTLASS's fast-float32 GEMMs and of PyTorch's float32
// memory-efficient attention: float32 accuracy (~1e-6 relative) at tensor-core speed.
//
// Layout: q, k, v, out and their gradients are (B, T, N, 64) row-major; lse and delta are
// (B, N, T). A CTA owns a tile of one (batch, head): 128 queries in the forward (32 rows per
// warp), 64 keys in the backward (16 per warp); the other side streams through shared memory in
// 64-row tiles with cp.async, the next tile loading while the current one computes.
//
// Fragments follow PTX's mma.m16n8k8 tf32 layouts, with g = lane / 4 and t = lane % 4:
// A (16x8): a0 (g, t), a1 (g+8, t), a2 (g, t+4), a3 (g+8, t+4); B (8x8): b0 (t, g), b1 (t+4, g);
// C (16x8): c0 (g, 2t), c1 (g, 2t+1), c2 (g+8, 2t), c3 (g+8, 2t+1).
// A product P.B whose left factor P is a C-layout accumulator (the softmax probabilities) reuses
// P's registers as the A fragment by relabelling the reduction index: A's k = t stands for
// column 2t and k = t+4 for column 2t+1, and B's rows are read in that same order.
#include "cuda/kernels.cuh"

namespace fit3d::cuda {
namespace {

constexpr int kDim = 64;                      // head dim
constexpr int kRows = 64;                     // rows of a tile (16 per warp)
constexpr int kStride = kDim + 4;             // padded smem row: conflict-free fragment loads
constexpr int kTileFloats = kRows * kStride;
constexpr int kThreads = 128;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

using Acc = float[8][4];  // a warp's 16x64 accumulator: eight 16x8 C fragments

struct Split {
  uint32_t hi, lo;
};

__device__ __forceinline__ uint32_t to_tf32(float x) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
  return r;
}

// hi is x rounded to TF32; the tensor core reads only lo's top 19 bits, so lo = x - hi needs no
// rounding of its own (|lo| <= 2^-11 |x|: what truncation drops is below 2^-21 |x|).
__device__ __forceinline__ Split split(float x) {
  const uint32_t hi = to_tf32(x);
  return {hi, __float_as_uint(x - __uint_as_float(hi))};
}

struct FragA {
  uint32_t hi[4], lo[4];
};

__device__ __forceinline__ FragA split_a(float a0, float a1, float a2, float a3) {
  const float x[4] = {a0, a1, a2, a3};
  FragA f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const Split s = split(x[i]);
    f.hi[i] = s.hi;
    f.lo[i] = s.lo;
  }
  return f;
}

// Four 8x4 float32 matrices from shared memory in one instruction (ldmatrix sees them as 8x8
// 16-bit matrices): lanes 8i..8i+7 give the row addresses of matrix i, and every lane receives
// element (lane / 4, lane % 4) of each: a tf32 fragment register.
__device__ __forceinline__ void ldmatrix_x4(float (&r)[4], const float* row) {
  const uint32_t addr = uint32_t(__cvta_generic_to_shared(row));
  uint32_t x0, x1, x2, x3;
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(x0), "=r"(x1), "=r"(x2), "=r"(x3)
               : "r"(addr));
  r[0] = __uint_as_float(x0);
  r[1] = __uint_as_float(x1);
  r[2] = __uint_as_float(x2);
  r[3] = __uint_as_float(x3);
}

__device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// d += a.b in 3xTF32, the small cross terms first.
__device__ __forceinline__ void mma3(float (&d)[4], const FragA& a, Split b0, Split b1) {
  mma(d, a.lo, b0.hi, b1.hi);
  mma(d, a.hi, b0.lo, b1.lo);
  mma(d, a.hi, b0.hi, b1.hi);
}

// acc[m] += A_m . B^T for the warp's M 16-row blocks A_m of a smem tile (`a` points at the
// first) and a 64x64 smem tile B whose rows are acc's columns; both contract over the 64 head
// dims. Each B fragment is split once and used by all M blocks.
template <int M>
__device__ __forceinline__ void gemm_abt(Acc (&acc)[M], const float* a, const float* b, int g, int t) {
  const int lane = 4 * g + t, r = lane % 8, mi = lane / 8;
#pragma unroll
  for (int j = 0; j < kDim / 8; ++j) {
    FragA fa[M];
#pragma unroll
    for (int m = 0; m < M; ++m) {  // matrices a0 (rows 0-7, k 0-3), a1 (8-15, 0-3), a2, a3 (k 4-7)
      float x[4];
      ldmatrix_x4(x, a + (16 * m + r + 8 * (mi % 2)) * kStride + 8 * j + 4 * (mi / 2));
      fa[m] = split_a(x[0], x[1], x[2], x[3]);
    }
#pragma unroll
    for (int i = 0; i < 8; i += 2) {  // matrices b0, b1 of column blocks i and i + 1
      float x[4];
      ldmatrix_x4(x, b + (8 * (i + mi / 2) + r) * kStride + 8 * j + 4 * (mi % 2));
      const Split s0 = split(x[0]), s1 = split(x[1]), s2 = split(x[2]), s3 = split(x[3]);
#pragma unroll
      for (int m = 0; m < M; ++m) {
        mma3(acc[m][i], fa[m], s0, s1);
        mma3(acc[m][i + 1], fa[m], s2, s3);
      }
    }
  }
}

// acc[m] += A_m . B for a 64x64 smem tile B whose rows contract. a_frag(m, i) gives A_m's
// fragment for rows 8i..8i+7 of B in the relabelled order: k = t stands for row 2t, k = t+4 for
// row 2t+1 (for a C-layout accumulator that is its own registers).
template <int M, typename AFrag>
__device__ __forceinline__ void gemm_kb(Acc (&acc)[M], AFrag a_frag, const float* b, int g, int t) {
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    FragA fa[M];
#pragma unroll
    for (int m = 0; m < M; ++m) fa[m] = a_frag(m, i);
#pragma unroll
    for (int d = 0; d < kDim / 8; ++d) {
      const float* br = b + (8 * i + 2 * t) * kStride + 8 * d + g;
      const Split b0 = split(br[0]), b1 = split(br[kStride]);
#pragma unroll
      for (int m = 0; m < M; ++m) mma3(acc[m][d], fa[m], b0, b1);
    }
  }
}

// acc[m] += P_m . B for the warp's C-layout accumulators P_m.
template <int M>
__device__ __forceinline__ void gemm_pb(Acc (&acc)[M], const Acc (&p)[M], const float* b, int g, int t) {
  gemm_kb<M>(acc, [&](int m, int i) { return split_a(p[m][i][0], p[m][i][2], p[m][i][1], p[m][i][3]); },
             b, g, t);
}

__device__ __forceinline__ void zero(Acc& acc) {
#pragma unroll
  for (int i = 0; i < 8; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[i][e] = 0.f;
}

// Column (token) index of accumulator element (i, e) in a tile starting at token `first`.
__device__ __forceinline__ int column(int first, int i, int e, int t) {
  return first + 8 * i + 2 * t + (e & 1);
}

// One (batch, head) of a (B, T, N, 64) tensor: rows are tokens, `stride` floats apart.
struct Head {
  const float* base;
  int64_t stride;
};

__device__ __forceinline__ Head head_of(const float* x, const AttentionShape& s, int b, int n) {
  return {x + (int64_t(b) * s.tokens * s.heads + n) * kDim, s.heads * kDim};
}

// Starts copying tokens [first, first + 64) of a head into a padded smem tile; tokens past the
// end are zero-filled (so masked products stay finite).
__device__ __forceinline__ void load_tile(float* tile, Head h, int first, int64_t tokens) {
#pragma unroll
  for (int c = threadIdx.x; c < kRows * kDim / 4; c += kThreads) {
    const int r = c / (kDim / 4), col = (c % (kDim / 4)) * 4;
    const bool valid = first + r < tokens;
    const float* src = h.base + (valid ? first + r : 0) * h.stride + col;
    const uint32_t dst = uint32_t(__cvta_generic_to_shared(tile + r * kStride + col));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src),
                 "r"(valid ? 16 : 0));
  }
}

__device__ __forceinline__ void commit() { asm volatile("cp.async.commit_group;"); }

// Waits for the current tile; the prefetched next one may still be in flight.
__device__ __forceinline__ void wait_current(bool next_in_flight) {
  if (next_in_flight)
    asm volatile("cp.async.wait_group 1;");
  else
    asm volatile("cp.async.wait_group 0;");
  __syncthreads();
}

__device__ __forceinline__ void scale_tile(float* tile, float factor) {
  for (int c = threadIdx.x; c < kRows * kDim; c += kThreads) tile[(c / kDim) * kStride + c % kDim] *= factor;
}

// Writes a warp's 16x64 accumulator times `factor` to rows [row0, row0 + 16) of a head.
__device__ __forceinline__ void store_rows(float* x, const AttentionShape& s, int b, int n, int row0,
                                           const Acc& acc, const float (&factor)[2], int g, int t) {
  float* base = x + (int64_t(b) * s.tokens * s.heads + n) * kDim;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = row0 + g + 8 * half;
    if (row >= s.tokens) continue;
    float* dst = base + int64_t(row) * s.heads * kDim + 2 * t;
#pragma unroll
    for (int d = 0; d < 8; ++d)
      *reinterpret_cast<float2*>(dst + 8 * d) =
          make_float2(acc[d][2 * half] * factor[half], acc[d][2 * half + 1] * factor[half]);
  }
}

// ------------------------------------------------------------------------------------ forward

// 16-row blocks per warp in the forward: each split B fragment feeds M of them (2: 21% faster
// than 1 at ViT-S shapes on an H100, despite a few spilled registers).
constexpr int kForwardBlocks = 2;

template <int M>
__global__ void __launch_bounds__(kThreads, 2)
    attention_forward_kernel(AttentionShape s, const float* q, const float* k, const float* v,
                             float* out, float* lse) {
  extern __shared__ __align__(16) float smem[];
  float* qs = smem;                   // M tiles: 64 M query rows
  float* ks = qs + M * kTileFloats;   // [2] tiles
  float* vs = ks + 2 * kTileFloats;   // [2] tiles
  const int warp = threadIdx.x / 32, g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
  const int q0 = blockIdx.x * kRows * M, n = blockIdx.y, b = blockIdx.z;
  const Head kh = head_of(k, s, b, n), vh = head_of(v, s, b, n);
  const int tiles = int((s.tokens + kRows - 1) / kRows);

  for (int m = 0; m < M; ++m) load_tile(qs + m * kTileFloats, head_of(q, s, b, n), q0 + m * kRows, s.tokens);
  load_tile(ks, kh, 0, s.tokens);
  load_tile(vs, vh, 0, s.tokens);
  commit();
  wait_current(false);
  for (int m = 0; m < M; ++m) scale_tile(qs + m * kTileFloats, s.scale * kLog2e);  // log2 units
  __syncthreads();

  // Warp w owns query rows [16 M w, 16 M (w + 1)) of the CTA's tile (contiguous in smem).
  const float* my_q = qs + warp * 16 * M * kStride;
  Acc o[M];
  float m_run[M][2], l[M][2];  // running row max; this lane's partial row sums
#pragma unroll
  for (int m = 0; m < M; ++m) {
    zero(o[m]);
    m_run[m][0] = m_run[m][1] = -INFINITY;
    l[m][0] = l[m][1] = 0.f;
  }
  for (int kt = 0; kt < tiles; ++kt) {
    const int buf = kt & 1;
    const bool next = kt + 1 < tiles;
    if (next) {
      load_tile(ks + (buf ^ 1) * kTileFloats, kh, (kt + 1) * kRows, s.tokens);
      load_tile(vs + (buf ^ 1) * kTileFloats, vh, (kt + 1) * kRows, s.tokens);
      commit();
    }
    if (kt > 0) wait_current(next);

    Acc p[M];
#pragma unroll
    for (int m = 0; m < M; ++m) zero(p[m]);
    gemm_abt<M>(p, my_q, ks + buf * kTileFloats, g, t);
#pragma unroll
    for (int m = 0; m < M; ++m) {
      float mx[2] = {m_run[m][0], m_run[m][1]};
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          if (column(kt * kRows, i, e, t) >= s.tokens) p[m][i][e] = -INFINITY;
          mx[e / 2] = fmaxf(mx[e / 2], p[m][i][e]);
        }
      float alpha[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {  // the four lanes of a row hold its 64 columns
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        alpha[r] = exp2f(m_run[m][r] - mx[r]);  // 0 on the first tile (key 0 is always valid)
        m_run[m][r] = mx[r];
        l[m][r] *= alpha[r];
      }
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          p[m][i][e] = exp2f(p[m][i][e] - mx[e / 2]);
          l[m][e / 2] += p[m][i][e];
          o[m][i][e] *= alpha[e / 2];
        }
    }
    // The tensor cores truncate as they accumulate: summing each tile into a fresh accumulator
    // and adding that in float32 keeps the error from growing with the number of keys (2.3e-6
    // instead of 1.7e-5 against float64 at 2543 tokens).
    Acc pv[M];
#pragma unroll
    for (int m = 0; m < M; ++m) zero(pv[m]);
    gemm_pb<M>(pv, p, vs + buf * kTileFloats, g, t);
#pragma unroll
    for (int m = 0; m < M; ++m)
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int e = 0; e < 4; ++e) o[m][i][e] += pv[m][i][e];
    __syncthreads();  // the next iteration's prefetch overwrites this buffer
  }

#pragma unroll
  for (int m = 0; m < M; ++m) {
    float inv[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      l[m][r] += __shfl_xor_sync(0xffffffffu, l[m][r], 1);
      l[m][r] += __shfl_xor_sync(0xffffffffu, l[m][r], 2);
      inv[r] = 1.f / l[m][r];
    }
    const int row0 = q0 + (warp * M + m) * 16;
    store_rows(out, s, b, n, row0, o[m], inv, g, t);
    if (t == 0)
      for (int r = 0; r < 2; ++r)
        if (row0 + g + 8 * r < s.tokens)
          lse[(int64_t(b) * s.heads + n) * s.tokens + row0 + g + 8 * r] =
              (m_run[m][r] + log2f(l[m][r])) * kLn2;
  }
}

// ----------------------------------------------------------------------------------- backward
//
// With scores S = scale q.k, P = softmax(S) = exp(S - lse) and delta = rowsum(dO * O):
// dV = P^T dO, dS = P * (dO V^T - delta), dK = scale dS^T Q, dQ = scale dS K.
// A CTA owns a key tile (16 keys per warp) and streams query tiles: per tile it recomputes P^T,
// accumulates dV and dK in registers, and adds the tile's dQ contribution (its 64 keys) to dQ
// with float32 atomics: five products per tile pair, where a separate dQ pass would need seven.
// Atomics make dQ's summation order, hence its last bits, vary between runs.

__global__ void __launch_bounds__(kThreads, 2)
    attention_backward_kernel(AttentionShape s, const float* q, const float* k, const float* v,
                              const float* dout, const float* lse, const float* delta, float* dq,
                              float* dk, float* dv) {
  extern __shared__ __align__(16) float smem[];
  float* ks = smem;                   // owned keys, times scale * log2(e)
  float* vs = ks + kTileFloats;       // owned values
  float* qs = vs + kTileFloats;       // [2] query tiles
  float* dos = qs + 2 * kTileFloats;  // d_out tile (single: refilled while dK and dQ compute)
  float* dss = dos + kTileFloats;     // dS^T of the tile: rows = owned keys, columns = queries
  const int warp = threadIdx.x / 32, g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
  const int k0 = blockIdx.x * kRows, n = blockIdx.y, b = blockIdx.z;
  const Head qh = head_of(q, s, b, n), doh = head_of(dout, s, b, n);
  const float* lse_h = lse + (int64_t(b) * s.heads + n) * s.tokens;
  const float* delta_h = delta + (int64_t(b) * s.heads + n) * s.tokens;
  float* dq_h = dq + (int64_t(b) * s.tokens * s.heads + n) * kDim;
  const int tiles = int((s.tokens + kRows - 1) / kRows);

  load_tile(ks, head_of(k, s, b, n), k0, s.tokens);
  load_tile(vs, head_of(v, s, b, n), k0, s.tokens);
  load_tile(qs, qh, 0, s.tokens);
  load_tile(dos, doh, 0, s.tokens);
  commit();
  wait_current(false);
  scale_tile(ks, s.scale * kLog2e);
  __syncthreads();

  const float* my_k = ks + warp * 16 * kStride;
  const float* my_v = vs + warp * 16 * kStride;
  Acc dk_acc[1], dv_acc[1];
  zero(dk_acc[0]);
  zero(dv_acc[0]);
  for (int qt = 0; qt < tiles; ++qt) {
    const int buf = qt & 1;
    const bool next = qt + 1 < tiles;
    const float* qt_s = qs + buf * kTileFloats;
    if (next) {
      load_tile(qs + (buf ^ 1) * kTileFloats, qh, (qt + 1) * kRows, s.tokens);
      commit();
    }

    Acc p[1];  // P^T: rows = this warp's keys, columns = the tile's queries
    zero(p[0]);
    gemm_abt<1>(p, my_k, qt_s, g, t);
    float lse2[8][2], dlt[8][2];  // per column
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int col = column(qt * kRows, i, e, t);
        const bool valid = col < s.tokens;  // padded queries get P = 0
        lse2[i][e] = valid ? __ldg(lse_h + col) * kLog2e : INFINITY;
        dlt[i][e] = valid ? __ldg(delta_h + col) : 0.f;
      }
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) p[0][i][e] = exp2f(p[0][i][e] - lse2[i][e & 1]);
    gemm_pb<1>(dv_acc, p, dos, g, t);

    Acc ds[1];  // dP^T = V dO^T, then dS^T
    zero(ds[0]);
    gemm_abt<1>(ds, my_v, dos, g, t);
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) ds[0][i][e] = p[0][i][e] * (ds[0][i][e] - dlt[i][e & 1]);
    __syncthreads();  // every warp is done with this d_out tile: refill it
    if (next) {
      load_tile(dos, doh, (qt + 1) * kRows, s.tokens);
      commit();
    }
    gemm_pb<1>(dk_acc, ds, qt_s, g, t);
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int half = 0; half < 2; ++half)
        *reinterpret_cast<float2*>(dss + (warp * 16 + g + 8 * half) * kStride + 8 * i + 2 * t) =
            make_float2(ds[0][i][2 * half], ds[0][i][2 * half + 1]);
    __syncthreads();

    // dQ for query rows 16 warp.. of the tile, summed over the 64 owned keys: A = dS, read from
    // dS^T in the relabelled key order; B = the owned keys (scaled: ln 2 undoes scale * log2 e).
    Acc dq_part[1];
    zero(dq_part[0]);
    const float* dsq = dss + warp * 16 + g;
    gemm_kb<1>(dq_part, [&](int, int i) {
      const float* r0 = dsq + (8 * i + 2 * t) * kStride;
      return split_a(r0[0], r0[8], r0[kStride], r0[kStride + 8]);
    }, ks, g, t);
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int row = qt * kRows + warp * 16 + g + 8 * half;
      if (row >= s.tokens) continue;
      float* dst = dq_h + int64_t(row) * s.heads * kDim + 2 * t;
#pragma unroll
      for (int d = 0; d < 8; ++d) {
        const float x = dq_part[0][d][2 * half] * kLn2, y = dq_part[0][d][2 * half + 1] * kLn2;
#if __CUDA_ARCH__ >= 900  // vector atomics: one instruction for both
        atomicAdd(reinterpret_cast<float2*>(dst + 8 * d), make_float2(x, y));
#else
        atomicAdd(dst + 8 * d, x);
        atomicAdd(dst + 8 * d + 1, y);
#endif
      }
    }
    if (next) wait_current(false);  // the next query and d_out tiles
    else __syncthreads();
  }
  const int row0 = k0 + warp * 16;
  const float one[2] = {1.f, 1.f}, scale[2] = {s.scale, s.scale};
  store_rows(dk, s, b, n, row0, dk_acc[0], scale, g, t);
  store_rows(dv, s, b, n, row0, dv_acc[0], one, g, t);
}

template <typename... Params, typename... Args>
std::string launch(cudaStream_t stream, void (*kernel)(AttentionShape, Params...), unsigned ctas,
                   int smem_tiles, const AttentionShape& s, const char* name, Args... args) {
  if (ctas == 0 || s.heads == 0 || s.batch == 0) return "";  // empty: nothing to launch
  const int bytes = smem_tiles * kTileFloats * int(sizeof(float));
  // Over 48 KiB of dynamic shared memory needs opting in; a host-side call, not stream work.
  if (cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
      e != cudaSuccess)
    return std::string(name) + ": " + cudaGetErrorString(e);
  const dim3 grid(ctas, unsigned(s.heads), unsigned(s.batch));  // ctas per (batch, head)
  kernel<<<grid, kThreads, bytes, stream>>>(s, args...);
  return last_error(name);
}

}  // namespace

std::string attention_forward(cudaStream_t stream, const AttentionShape& s, const float* q,
                              const float* k, const float* v, float* out, float* lse) {
  constexpr int M = kForwardBlocks;
  const unsigned ctas = unsigned((s.tokens + kRows * M - 1) / (kRows * M));
  return launch(stream, attention_forward_kernel<M>, ctas, M + 4, s, "attention_forward", q, k, v,
                out, lse);
}

std::string attention_backward(cudaStream_t stream, const AttentionShape& s, const float* q,
                               const float* k, const float* v, const float* dout, const float* lse,
                               const float* delta, float* dq, float* dk, float* dv) {
  cudaMemsetAsync(dq, 0, size_t(s.batch * s.tokens * s.heads * kDim) * sizeof(float), stream);
  const unsigned ctas = unsigned((s.tokens + kRows - 1) / kRows);
  return launch(stream, attention_backward_kernel, ctas, 6, s, "attention_backward", q, k, v, dout,
                lse, delta, dq, dk, dv);
}

}  // namespace fit3d::cuda
