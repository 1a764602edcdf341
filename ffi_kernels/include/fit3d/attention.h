// The fused attention stage's shape, shared by the CPU and CUDA builds.
//
// Self-attention over row-major float32 tensors: q, k, v, the output and their gradients are
// (batch, tokens, heads, head_dim); the log-sum-exp of each query's scores and the backward's
// delta = rowsum(d_out * out) are (batch, heads, tokens).
#pragma once

#include <cstdint>

namespace fit3d {

struct AttentionShape {
  int64_t batch, tokens, heads, head_dim;
  float scale;  // multiplies q.k before the softmax
};

}  // namespace fit3d
