// The fused segmentation loss, shared by the CPU and CUDA builds: softmax cross-entropy of class
// maps upsampled along their width by two-tap (bilinear) interpolation, with its gradient.
//
// Row r of `logits` (rows, in_width, classes) stands for out_width pixels: pixel x's class
// scores are tap_weight[x, 0] * logits[r, tap_index[x, 0]] + tap_weight[x, 1] *
// logits[r, tap_index[x, 1]], and labels[r, x] is its class (ignore_index: none; a label outside
// [0, classes) picks no score, as a one-hot of it would). The taps ascend along the width, so
// the pixels whose low tap is column j form one segment, [segments[j], segments[j + 1]); their
// high tap is one column, j + 1 (or j itself at the last column). Both builds take the softmax
// once per pixel and sum the gradient of each column segment by segment, in pixel order (the
// CUDA build adds a segment's one-hot terms after its softmax terms).
//
// Results: nll[r], the sum over row r's labelled pixels of logsumexp(scores) - scores[label];
// grad = d(sum of nll) / d logits. The loss exists only to be minimised, so the one pass that
// makes the softmax writes both, and the full-resolution scores never reach memory.
#pragma once

#include <cstdint>

namespace fit3d {

// The CUDA build keeps a pixel's scores in registers, 32 classes per register (the CPU build takes
// any count; fit3d_jax/probe/fused_loss.py uses XLA's loss beyond this).
constexpr int kMaxCrossEntropyClasses = 256;

struct CrossEntropyShape {
  int64_t rows, in_width, out_width, classes;
  int32_t ignore_index;
};

struct CrossEntropyArgs {
  const float* logits;      // (rows, in_width, classes)
  const int32_t* labels;    // (rows, out_width)
  const int32_t* tap_index;  // (out_width, 2)
  const float* tap_weight;   // (out_width, 2)
  const int32_t* segments;   // (in_width + 1,)
  float* nll;               // (rows,)
  float* grad;              // (rows, in_width, classes)
};

}  // namespace fit3d
