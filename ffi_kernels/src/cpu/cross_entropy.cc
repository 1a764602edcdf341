// The fused segmentation loss on the CPU: the CUDA build's algorithm in plain float32 loops, one
// row per task. Segment by segment (the pixels of one low tap, fit3d/cross_entropy.h): per pixel
// the interpolated scores, their max, the exponentials and their sum, then softmax - one-hot,
// weighted into the segment's two columns; a column's gradient is what its two segments add.
#include <cmath>
#include <vector>

#include "cpu/kernels.h"
#include "cpu/parallel.h"

namespace fit3d::cpu {

void cross_entropy(const CrossEntropyShape& s, const CrossEntropyArgs& a) {
  const int64_t w = s.in_width, width = s.out_width, C = s.classes;
  std::vector<std::vector<float>> scratch(num_workers(s.rows), std::vector<float>(3 * C));
  parallel_for(s.rows, [&](int64_t r, int worker) {
    const float* logits = a.logits + r * w * C;
    const int32_t* labels = a.labels + r * width;
    float* grad = a.grad + r * w * C;
    float *z = scratch[worker].data(), *low = z + C, *high = low + C;
    std::fill(grad, grad + w * C, 0.f);
    float nll = 0.f;
    for (int64_t j = 0; j < w; ++j) {
      const int32_t begin = a.segments[j], end = a.segments[j + 1];
      if (begin == end) continue;
      const int64_t j1 = a.tap_index[2 * begin + 1];
      const float *l0 = logits + j * C, *l1 = logits + j1 * C;
      std::fill(low, low + 2 * C, 0.f);
      for (int32_t x = begin; x < end; ++x) {
        const int32_t label = labels[x];
        if (label == s.ignore_index) continue;
        const float w0 = a.tap_weight[2 * x], w1 = a.tap_weight[2 * x + 1];
        float m = -INFINITY, picked = 0.f, sum = 0.f;
        for (int64_t c = 0; c < C; ++c) {
          z[c] = w0 * l0[c] + w1 * l1[c];
          m = std::fmax(m, z[c]);  // fmax skips NaN: a NaN score still poisons the sum below
        }
        for (int64_t c = 0; c < C; ++c) {
          if (c == label) picked = z[c];
          z[c] = std::exp(z[c] - m);
          sum += z[c];
        }
        const float inv = 1.f / sum;
        for (int64_t c = 0; c < C; ++c) {
          const float g = z[c] * inv - float(c == label);
          low[c] += w0 * g;
          high[c] += w1 * g;
        }
        nll += m + std::log(sum) - picked;
      }
      for (int64_t c = 0; c < C; ++c) grad[j * C + c] += low[c];
      for (int64_t c = 0; c < C; ++c) grad[j1 * C + c] += high[c];
    }
    a.nll[r] = nll;
  });
}

}  // namespace fit3d::cpu
