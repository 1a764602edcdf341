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

// Gradient of one pair with respect to the Gaussian's mean2d, conic and opacity, given
// dL/dalpha of the pair (zero when alpha was clamped).
struct SplatGrad {
  float d_mean[2];
  float d_conic[3];
  float d_opacity;
};

FIT3D_HD SplatGrad splat_eval_backward(const SplatEval& e, const float conic[3], float d_alpha) {
  SplatGrad g;
  if (e.clamped) d_alpha = 0.f;
  // alpha = o exp(-sigma):  dalpha/do = exp(-sigma),  dalpha/dsigma = -alpha.
  g.d_opacity = e.falloff * d_alpha;
  const float d_sigma = -e.alpha * d_alpha;
  g.d_conic[0] = 0.5f * e.dx * e.dx * d_sigma;
  g.d_conic[1] = e.dx * e.dy * d_sigma;
  g.d_conic[2] = 0.5f * e.dy * e.dy * d_sigma;
  g.d_mean[0] = (conic[0] * e.dx + conic[1] * e.dy) * d_sigma;
  g.d_mean[1] = (conic[1] * e.dx + conic[2] * e.dy) * d_sigma;
  return g;
}

// Walking back to front: given the transmittance behind a contribution (t_behind, which starts at
// the pixel's final transmittance), returns the transmittance in front of it.
FIT3D_HD float transmittance_in_front(float t_behind, float alpha) {
  return t_behind / (1.f - alpha);
}

// dL/dalpha contribution of one blended channel: value c of this Gaussian, accumulated
// weighted value behind it s_behind, output gradient g, transmittance in front t.
//   out = sum_i alpha_i T_i c_i  ->  d out / d alpha_i = T_i c_i - s_behind / (1 - alpha_i).
FIT3D_HD float channel_dalpha(float c, float s_behind, float g, float t, float alpha) {
  return g * (c * t - s_behind / (1.f - alpha));
}

// dL/dalpha through the final transmittance T = prod (1 - alpha_i).
FIT3D_HD float transmittance_dalpha(float t_final, float g_t, float alpha) {
  return -g_t * t_final / (1.f - alpha);
}

}  // namespace fit3d
