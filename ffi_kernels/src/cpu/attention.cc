// Fused attention on the CPU: the CUDA build's algorithm (softmax from the row's log-sum-exp,
// the two-sided backward), one (batch, head) per task, in plain float32 loops.
#include <cmath>
#include <vector>

#include "cpu/kernels.h"
#include "cpu/parallel.h"

namespace fit3d::cpu {
namespace {

// Rows of one (batch, head) of a (B, T, N, D) tensor.
struct Head {
  int64_t offset, stride;
  template <typename T>
  T* row(T* x, int64_t token) const { return x + offset + token * stride; }
};

Head head_of(const AttentionShape& s, int64_t task) {
  const int64_t b = task / s.heads, n = task % s.heads;
  return {(b * s.tokens * s.heads + n) * s.head_dim, s.heads * s.head_dim};
}

float dot(const float* a, const float* b, int64_t n) {
  float acc = 0.f;
  for (int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

// scores[j] = scale * q_row . k_j over all keys j.
void scores(const AttentionShape& s, const Head& h, const float* q_row, const float* k,
            std::vector<float>& out) {
  for (int64_t j = 0; j < s.tokens; ++j) out[j] = s.scale * dot(q_row, h.row(k, j), s.head_dim);
}

}  // namespace

void attention_forward(const AttentionShape& s, const float* q, const float* k, const float* v,
                       float* out, float* lse) {
  const int64_t D = s.head_dim;
  parallel_for(s.batch * s.heads, [&](int64_t task, int) {
    const Head h = head_of(s, task);
    std::vector<float> p(s.tokens);
    for (int64_t i = 0; i < s.tokens; ++i) {
      scores(s, h, h.row(q, i), k, p);
      float m = -INFINITY;
      for (float x : p) m = std::fmax(m, x);
      float sum = 0.f;
      for (float& x : p) sum += (x = std::exp(x - m));
      float* o = h.row(out, i);
      for (int64_t d = 0; d < D; ++d) o[d] = 0.f;
      for (int64_t j = 0; j < s.tokens; ++j) {
        const float* vj = h.row(v, j);
        for (int64_t d = 0; d < D; ++d) o[d] += p[j] * vj[d];
      }
      for (int64_t d = 0; d < D; ++d) o[d] /= sum;
      lse[task * s.tokens + i] = m + std::log(sum);
    }
  });
}

void attention_backward(const AttentionShape& s, const float* q, const float* k, const float* v,
                        const float* dout, const float* lse, const float* delta, float* dq,
                        float* dk, float* dv) {
  const int64_t D = s.head_dim;
  parallel_for(s.batch * s.heads, [&](int64_t task, int) {
    const Head h = head_of(s, task);
    for (int64_t j = 0; j < s.tokens; ++j)
      for (int64_t d = 0; d < D; ++d) h.row(dk, j)[d] = h.row(dv, j)[d] = 0.f;
    std::vector<float> p(s.tokens);
    for (int64_t i = 0; i < s.tokens; ++i) {
      const float* qi = h.row(q, i);
      const float* doi = h.row(dout, i);
      float* dqi = h.row(dq, i);
      for (int64_t d = 0; d < D; ++d) dqi[d] = 0.f;
      scores(s, h, qi, k, p);
      for (int64_t j = 0; j < s.tokens; ++j) {
        const float pj = std::exp(p[j] - lse[task * s.tokens + i]);
        const float ds = pj * (dot(doi, h.row(v, j), D) - delta[task * s.tokens + i]);
        const float* kj = h.row(k, j);
        float* dkj = h.row(dk, j);
        float* dvj = h.row(dv, j);
        for (int64_t d = 0; d < D; ++d) {
          dqi[d] += s.scale * ds * kj[d];
          dkj[d] += s.scale * ds * qi[d];
          dvj[d] += pj * doi[d];
        }
      }
    }
  });
}

}  // namespace fit3d::cpu
