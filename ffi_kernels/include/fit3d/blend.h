// Per (pixel, Gaussian) math of front-to-back alpha blending and its backward (host-device).
//
// For a pixel with centre (px, py) and a Gaussian with 2D mean m, conic (a, b, c), opacity o:
//   d = m - (px, py), sigma = a dx^2 / 2 + b dx dy + c dy^2 / 2,
//   alpha = min(0.99, o exp(-sigma)), skipped when sigma < 0 or alpha < 1/255.
// Front to back, a contribution is accepted while the transmittance after it stays >= 1e-4;
// the first one that would push it lower ends the pixel (and is not blended).
#pragma once

#include "fit3d/common.h"

namespace fit3d {

struct SplatEval {
  float alpha;     // 0 when the pair is skipped
  float dx, dy;    // mean - pixel centre
  float falloff;   // exp(-sigma)
  bool clamped;    // alpha hit kAlphaMax (then it has no gradient)
};

FIT3D_HD SplatEval splat_eval(Vec2 mean2d, const float conic[3], float opacity, float px,
                              float py) {
  SplatEval e;
  e.dx = mean2d.x - px;
  e.dy = mean2d.y - py;
  const float sigma = 0.5f * (conic[0] * e.dx * e.dx + conic[2] * e.dy * e.dy) +
                      conic[1] * e.dx * e.dy;
  e.falloff = exp_neg(sigma);
  const float raw = opacity * e.falloff;
  e.clamped = raw >= kAlphaMax;
  e.alpha = fminf(kAlphaMax, raw);
  if (sigma < 0.f || e.alpha < kAlphaMin) e.alpha = 0.f;
  return e;
}

// dL/dsigma of one pair given its dL/dalpha (alpha = o exp(-sigma), so dalpha/dsigma = -alpha;
// zero where alpha was clamped). Everything else of the pair's gradient follows from it.
FIT3D_HD float splat_dsigma(const SplatEval& e, float d_alpha) {
  return e.clamped ? 0.f : -e.alpha * d_alpha;
}

// Accumulates the pair's gradient into mean2d (2) and conic (3) given dL/dsigma.
FIT3D_HD void sigma_backward(float dx, float dy, const float conic[3], float d_sigma,
                             float d_mean[2], float d_conic[3]) {
  d_mean[0] += (conic[0] * dx + conic[1] * dy) * d_sigma;
  d_mean[1] += (conic[1] * dx + conic[2] * dy) * d_sigma;
  d_conic[0] += 0.5f * dx * dx * d_sigma;
  d_conic[1] += dx * dy * d_sigma;
  d_conic[2] += 0.5f * dy * dy * d_sigma;
}

// dL/dopacity from the sum of dL/dsigma over a Gaussian's unclamped pairs: there
// dalpha/do = exp(-sigma) = alpha / o, i.e. dL/do = -dL/dsigma / o.
FIT3D_HD float opacity_grad(float sum_d_sigma, float opacity) { return -sum_d_sigma / opacity; }

// The backward walks each pixel back to front. With r = 1 / (1 - alpha) of a contribution
// (computed once per pair: multiplications are much cheaper than divisions on the GPU):

// Transmittance in front of a contribution from the one behind it (which starts at the pixel's
// final transmittance).
FIT3D_HD float transmittance_in_front(float t_behind, float r) { return t_behind * r; }

// dL/dalpha contribution of one blended channel: value c of this Gaussian, accumulated
// weighted value behind it s_behind, output gradient g, transmittance in front t.
//   out = sum_i alpha_i T_i c_i  ->  d out / d alpha_i = T_i c_i - s_behind / (1 - alpha_i).
FIT3D_HD float channel_dalpha(float c, float s_behind, float g, float t, float r) {
  return g * (c * t - s_behind * r);
}

// dL/dalpha through the final transmittance T = prod (1 - alpha_i).
FIT3D_HD float transmittance_dalpha(float t_final, float g_t, float r) { return -g_t * t_final * r; }

}  // namespace fit3d
