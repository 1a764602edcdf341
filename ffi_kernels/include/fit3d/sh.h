// View-dependent colour from real spherical harmonics of degree 0..3 (3DGS basis and
// constants), forward and backward (host-device). colour = max(sum_k b_k(d) sh_k + 0.5, 0)
// with d the unit direction from the camera centre to the Gaussian mean.
#pragma once

#include "fit3d/common.h"

namespace fit3d {

constexpr float kShC0 = 0.28209479177387814f;
constexpr float kShC1 = 0.4886025119029199f;
// Scalars rather than arrays: namespace-scope constexpr arrays are not visible in device code.
constexpr float kShC2_0 = 1.0925484305920792f, kShC2_1 = -1.0925484305920792f,
                kShC2_2 = 0.31539156525252005f, kShC2_3 = -1.0925484305920792f,
                kShC2_4 = 0.5462742152960396f;
constexpr float kShC3_0 = -0.5900435899266435f, kShC3_1 = 2.890611442640554f,
                kShC3_2 = -0.4570457994644658f, kShC3_3 = 0.3731763325901154f,
                kShC3_4 = -0.4570457994644658f, kShC3_5 = 1.445305721320277f,
                kShC3_6 = -0.5900435899266435f;

FIT3D_HD int sh_coeffs_for_degree(int degree) { return (degree + 1) * (degree + 1); }

// Basis values b[0 .. (degree+1)^2) at unit direction d.
FIT3D_HD void sh_basis(int degree, Vec3 d, float* b) {
  const float x = d.x, y = d.y, z = d.z;
  b[0] = kShC0;
  if (degree < 1) return;
  b[1] = -kShC1 * y;
  b[2] = kShC1 * z;
  b[3] = -kShC1 * x;
  if (degree < 2) return;
  const float xx = x * x, yy = y * y, zz = z * z;
  b[4] = kShC2_0 * x * y;
  b[5] = kShC2_1 * y * z;
  b[6] = kShC2_2 * (2.f * zz - xx - yy);
  b[7] = kShC2_3 * x * z;
  b[8] = kShC2_4 * (xx - yy);
  if (degree < 3) return;
  b[9] = kShC3_0 * y * (3.f * xx - yy);
  b[10] = kShC3_1 * x * y * z;
  b[11] = kShC3_2 * y * (4.f * zz - xx - yy);
  b[12] = kShC3_3 * z * (2.f * zz - 3.f * xx - 3.f * yy);
  b[13] = kShC3_4 * x * (4.f * zz - xx - yy);
  b[14] = kShC3_5 * z * (xx - yy);
  b[15] = kShC3_6 * x * (xx - 3.f * yy);
}

// d/dd of sum_k w_k b_k(d) for weights w (the colour gradient folded with the coefficients).
FIT3D_HD Vec3 sh_basis_vjp(int degree, Vec3 d, const float* w) {
  Vec3 g = {0.f, 0.f, 0.f};
  if (degree < 1) return g;
  const float x = d.x, y = d.y, z = d.z;
  g.y += -kShC1 * w[1];
  g.z += kShC1 * w[2];
  g.x += -kShC1 * w[3];
  if (degree < 2) return g;
  const float xx = x * x, yy = y * y, zz = z * z;
  g.x += kShC2_0 * y * w[4];
  g.y += kShC2_0 * x * w[4];
  g.y += kShC2_1 * z * w[5];
  g.z += kShC2_1 * y * w[5];
  g.x += -2.f * kShC2_2 * x * w[6];
  g.y += -2.f * kShC2_2 * y * w[6];
  g.z += 4.f * kShC2_2 * z * w[6];
  g.x += kShC2_3 * z * w[7];
  g.z += kShC2_3 * x * w[7];
  g.x += 2.f * kShC2_4 * x * w[8];
  g.y += -2.f * kShC2_4 * y * w[8];
  if (degree < 3) return g;
  g.x += kShC3_0 * 6.f * x * y * w[9];
  g.y += kShC3_0 * 3.f * (xx - yy) * w[9];
  g.x += kShC3_1 * y * z * w[10];
  g.y += kShC3_1 * x * z * w[10];
  g.z += kShC3_1 * x * y * w[10];
  g.x += kShC3_2 * -2.f * x * y * w[11];
  g.y += kShC3_2 * (4.f * zz - xx - 3.f * yy) * w[11];
  g.z += kShC3_2 * 8.f * y * z * w[11];
  g.x += kShC3_3 * -6.f * x * z * w[12];
  g.y += kShC3_3 * -6.f * y * z * w[12];
  g.z += kShC3_3 * (6.f * zz - 3.f * xx - 3.f * yy) * w[12];
  g.x += kShC3_4 * (4.f * zz - 3.f * xx - yy) * w[13];
  g.y += kShC3_4 * -2.f * x * y * w[13];
  g.z += kShC3_4 * 8.f * x * z * w[13];
  g.x += kShC3_5 * 2.f * x * z * w[14];
  g.y += kShC3_5 * -2.f * y * z * w[14];
  g.z += kShC3_5 * (xx - yy) * w[14];
  g.x += kShC3_6 * 3.f * (xx - yy) * w[15];
  g.y += kShC3_6 * -6.f * x * y * w[15];
  return g;
}

// colour[3] of one Gaussian. sh points at its K x 3 coefficients (row-major), `degree` is the
// active degree (<= the degree K allows).
FIT3D_HD void sh_to_color(int degree, Vec3 mean, Vec3 cam_pos, const float* sh, float color[3]) {
  const Vec3 v = mean - cam_pos;
  const float inv = 1.f / sqrtf(dot(v, v));
  float b[16];
  sh_basis(degree, inv * v, b);
  const int n = sh_coeffs_for_degree(degree);
  for (int ch = 0; ch < 3; ++ch) {
    float acc = 0.f;
    for (int k = 0; k < n; ++k) acc += b[k] * sh[3 * k + ch];
    const float c = acc + 0.5f;
    color[ch] = c < 0.f ? 0.f : c;  // not fmaxf, which would turn NaN into 0
  }
}

// Backward of sh_to_color: writes d_sh (K x 3, zero beyond the active degree) and returns the
// gradient with respect to the mean (through the viewing direction).
FIT3D_HD Vec3 sh_to_color_backward(int degree, int num_coeffs, Vec3 mean, Vec3 cam_pos,
                                   const float* sh, const float d_color_in[3], float* d_sh) {
  const Vec3 v = mean - cam_pos;
  const float norm = sqrtf(dot(v, v));
  const Vec3 d = (1.f / norm) * v;
  float b[16];
  sh_basis(degree, d, b);
  const int n = sh_coeffs_for_degree(degree);
  float d_color[3];
  for (int ch = 0; ch < 3; ++ch) {
    float acc = 0.f;
    for (int k = 0; k < n; ++k) acc += b[k] * sh[3 * k + ch];
    d_color[ch] = acc + 0.5f > 0.f ? d_color_in[ch] : 0.f;  // the max(., 0) clamp
  }
  float w[16];
  for (int k = 0; k < n; ++k)
    w[k] = d_color[0] * sh[3 * k] + d_color[1] * sh[3 * k + 1] + d_color[2] * sh[3 * k + 2];
  // Written after all reads of sh, so d_sh may alias sh (the CUDA build works in place).
  for (int k = 0; k < num_coeffs; ++k)
    for (int ch = 0; ch < 3; ++ch) d_sh[3 * k + ch] = k < n ? b[k] * d_color[ch] : 0.f;
  const Vec3 g_dir = sh_basis_vjp(degree, d, w);
  // d = v / |v|  ->  dL/dv = (g - d (d . g)) / |v|.
  return (1.f / norm) * (g_dir - dot(d, g_dir) * d);
}

}  // namespace fit3d
