// Per-Gaussian EWA projection, forward and backward (host-device).
//
// Forward: world mean/scale/quaternion -> 2D mean, conic (inverse 2D covariance, upper
// triangle a b c), camera depth, the opacity-aware pixel extent used for tile binning, and the
// 3DGS screen radius (ceil of 3 sigma of the major axis). Backward: the exact gradient of the
// mean2d, conic and depth outputs with respect to mean, scale and quaternion (the quaternion is
// normalised inside, the x/z and y/z clamp of the Jacobian is differentiated as a clamp).
#pragma once

#include "fit3d/common.h"

namespace fit3d {

struct Projected {
  Vec2 mean2d;
  float conic[3];  // inverse 2D covariance [[a, b], [b, c]] stored as (a, b, c)
  float depth;     // camera-space z
  Vec2 extent;     // half-size (pixels) of the box outside which alpha < 1/255; 0 when culled
  int radius;      // 3DGS screen radius, 0 when culled
};

FIT3D_HD Mat3 quat_to_rotmat(float w, float x, float y, float z) {
  Mat3 r;
  r(0, 0) = 1.f - 2.f * (y * y + z * z);
  r(0, 1) = 2.f * (x * y - w * z);
  r(0, 2) = 2.f * (x * z + w * y);
  r(1, 0) = 2.f * (x * y + w * z);
  r(1, 1) = 1.f - 2.f * (x * x + z * z);
  r(1, 2) = 2.f * (y * z - w * x);
  r(2, 0) = 2.f * (x * z - w * y);
  r(2, 1) = 2.f * (y * z + w * x);
  r(2, 2) = 1.f - 2.f * (x * x + y * y);
  return r;
}

// Pixel-centre range [x0, x1] x [y0, y1] (inclusive) covered by a Gaussian's binning box;
// false when it covers no pixel. Pixel j's centre is j + 0.5. Shared by projection (culling),
// binning and both rasterizers so all agree on which pixels a Gaussian may touch.
FIT3D_HD bool pixel_rect(Vec2 mean2d, Vec2 extent, int width, int height, int* x0, int* x1,
                         int* y0, int* y1) {
  if (!(extent.x > 0.f && extent.y > 0.f)) return false;  // culled (also rejects NaN)
  const float lo_x = ceilf(mean2d.x - extent.x - 0.5f);
  const float hi_x = floorf(mean2d.x + extent.x - 0.5f);
  const float lo_y = ceilf(mean2d.y - extent.y - 0.5f);
  const float hi_y = floorf(mean2d.y + extent.y - 0.5f);
  // Written so that NaN fails every test.
  if (!(lo_x <= hi_x && lo_y <= hi_y && hi_x >= 0.f && hi_y >= 0.f &&
        lo_x <= float(width - 1) && lo_y <= float(height - 1)))
    return false;
  *x0 = int(fmaxf(lo_x, 0.f));
  *x1 = int(fminf(hi_x, float(width - 1)));
  *y0 = int(fmaxf(lo_y, 0.f));
  *y1 = int(fminf(hi_y, float(height - 1)));
  return true;
}

// Intermediate values of the projection that the backward pass recomputes.
struct ProjectionState {
  Vec3 p;         // camera-space mean
  Mat3 rq;        // rotation of the normalised quaternion
  float qn[4];    // normalised quaternion (w, x, y, z)
  float qnorm;
  Mat3 m;         // rq * diag(scale)
  Mat3 cov_cam;   // R Sigma R^T
  float uc, vc;   // clamped x/z and y/z used in the Jacobian
  bool inside_u, inside_v;
  float j00, j02, j11, j12;  // EWA Jacobian [[j00, 0, j02], [0, j11, j12]]
  float cov2d[3];            // dilated 2D covariance (a, b, c)
};

FIT3D_HD bool projection_state(const Camera& cam, Vec3 mean, Vec3 scale, const float quat[4],
                               ProjectionState* s) {
  s->p = matvec(cam.rot, mean) + cam.trans;
  const float z = s->p.z;
  if (!(z >= cam.near_plane && z <= cam.far_plane)) return false;

  const float qnorm = sqrtf(quat[0] * quat[0] + quat[1] * quat[1] + quat[2] * quat[2] +
                            quat[3] * quat[3]);
  s->qnorm = qnorm;
  for (int k = 0; k < 4; ++k) s->qn[k] = quat[k] / qnorm;
  s->rq = quat_to_rotmat(s->qn[0], s->qn[1], s->qn[2], s->qn[3]);
  const float sc[3] = {scale.x, scale.y, scale.z};
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 3; ++c) s->m(r, c) = s->rq(r, c) * sc[c];
  const Mat3 cov = matmul(s->m, transpose(s->m));
  s->cov_cam = matmul(matmul(cam.rot, cov), transpose(cam.rot));

  const float u = s->p.x / z, v = s->p.y / z;
  const float tan_x = 0.5f * float(cam.width) / cam.fx;
  const float tan_y = 0.5f * float(cam.height) / cam.fy;
  const float u_hi = (float(cam.width) - cam.cx) / cam.fx + kFrustumSlack * tan_x;
  const float u_lo = -(cam.cx / cam.fx + kFrustumSlack * tan_x);
  const float v_hi = (float(cam.height) - cam.cy) / cam.fy + kFrustumSlack * tan_y;
  const float v_lo = -(cam.cy / cam.fy + kFrustumSlack * tan_y);
  s->uc = clampf(u, u_lo, u_hi);
  s->vc = clampf(v, v_lo, v_hi);
  s->inside_u = u > u_lo && u < u_hi;
  s->inside_v = v > v_lo && v < v_hi;
  s->j00 = cam.fx / z;
  s->j02 = -cam.fx * s->uc / z;
  s->j11 = cam.fy / z;
  s->j12 = -cam.fy * s->vc / z;

  // cov2d = J cov_cam J^T + dilation.
  const Mat3& c = s->cov_cam;
  const float t0x = s->j00 * c(0, 0) + s->j02 * c(2, 0);
  const float t0y = s->j00 * c(0, 1) + s->j02 * c(2, 1);
  const float t0z = s->j00 * c(0, 2) + s->j02 * c(2, 2);
  const float t1y = s->j11 * c(1, 1) + s->j12 * c(2, 1);
  const float t1z = s->j11 * c(1, 2) + s->j12 * c(2, 2);
  s->cov2d[0] = t0x * s->j00 + t0z * s->j02 + kDilation;
  s->cov2d[1] = t0y * s->j11 + t0z * s->j12;
  s->cov2d[2] = t1y * s->j11 + t1z * s->j12 + kDilation;
  return true;
}

// Forward projection of one Gaussian; returns false (and zeroes `out`) when it is culled:
// outside [near, far], degenerate covariance, opacity that can never reach 1/255, or a binning
// box that covers no pixel. Non-finite inputs are not culled: they yield non-finite outputs so
// that the rasterizer's input validation reports them.
FIT3D_HD bool project_gaussian(const Camera& cam, Vec3 mean, Vec3 scale, const float quat[4],
                               float opacity, Projected* out) {
  *out = Projected{{0.f, 0.f}, {0.f, 0.f, 0.f}, 0.f, {0.f, 0.f}, 0};
  const bool all_finite = is_finite(mean.x) && is_finite(mean.y) && is_finite(mean.z) &&
                      is_finite(scale.x) && is_finite(scale.y) && is_finite(scale.z) &&
                      is_finite(quat[0]) && is_finite(quat[1]) && is_finite(quat[2]) &&
                      is_finite(quat[3]) && is_finite(opacity);
  if (!all_finite) {
    const float nan = NAN;
    *out = Projected{{nan, nan}, {nan, nan, nan}, nan, {nan, nan}, 0};
    return false;
  }
  ProjectionState s;
  if (!projection_state(cam, mean, scale, quat, &s)) return false;
  const float a = s.cov2d[0], b = s.cov2d[1], c = s.cov2d[2];
  const float det = a * c - b * b;
  if (!(det > 0.f) || !(opacity >= kAlphaMin)) return false;

  Projected r;
  r.mean2d = {cam.fx * s.p.x / s.p.z + cam.cx, cam.fy * s.p.y / s.p.z + cam.cy};
  r.conic[0] = c / det;
  r.conic[1] = -b / det;
  r.conic[2] = a / det;
  r.depth = s.p.z;
  // alpha >= 1/255  <=>  sigma <= log(255 opacity); the smallest sigma at horizontal offset dx
  // is dx^2 / (2 cov_xx), hence |dx| <= sqrt(2 cov_xx log(255 opacity)).
  const float level = logf(opacity / kAlphaMin);
  r.extent = {sqrtf(2.f * level * a), sqrtf(2.f * level * c)};
  int x0, x1, y0, y1;
  if (!pixel_rect(r.mean2d, r.extent, cam.width, cam.height, &x0, &x1, &y0, &y1)) return false;
  const float mid = 0.5f * (a + c);
  const float lambda = mid + sqrtf(fmaxf(0.1f, mid * mid - det));
  r.radius = int(ceilf(3.f * sqrtf(lambda)));
  *out = r;
  return true;
}

struct ProjectionGrads {
  Vec3 mean, scale;
  float quat[4];
};

// Gradient of a loss with respect to mean, scale and quaternion given the gradients with respect
// to mean2d, conic and depth of a Gaussian that was not culled.
FIT3D_HD ProjectionGrads project_gaussian_backward(const Camera& cam, Vec3 mean, Vec3 scale,
                                                   const float quat[4], Vec2 d_mean2d,
                                                   const float d_conic[3], float d_depth) {
  ProjectionState s;
  projection_state(cam, mean, scale, quat, &s);
  const float z = s.p.z;
  const float a = s.cov2d[0], b = s.cov2d[1], c = s.cov2d[2];
  const float det = a * c - b * b;
  const float qa = c / det, qb = -b / det, qc = a / det;

  Vec3 d_p = {0.f, 0.f, d_depth};
  // mean2d = (fx x/z + cx, fy y/z + cy)
  d_p.x += cam.fx / z * d_mean2d.x;
  d_p.y += cam.fy / z * d_mean2d.y;
  d_p.z -= (cam.fx * s.p.x * d_mean2d.x + cam.fy * s.p.y * d_mean2d.y) / (z * z);

  // conic = cov2d^-1: dL/dcov2d = -Q G Q with G the symmetric gradient of Q (off-diagonal
  // entries carry half of dL/db because b appears twice in the matrix).
  const float ga = d_conic[0], gb = 0.5f * d_conic[1], gc = d_conic[2];
  const float p00 = qa * ga + qb * gb, p01 = qa * gb + qb * gc;
  const float p10 = qb * ga + qc * gb, p11 = qb * gb + qc * gc;
  const float gc00 = -(p00 * qa + p01 * qb);
  const float gc01 = -(p00 * qb + p01 * qc);
  const float gc11 = -(p10 * qb + p11 * qc);

  // cov2d = J C J^T: dL/dC = J^T G J, dL/dJ = 2 G J C (G, C symmetric).
  float jm[2][3] = {{s.j00, 0.f, s.j02}, {0.f, s.j11, s.j12}};
  const float g2[2][2] = {{gc00, gc01}, {gc01, gc11}};
  Mat3 d_cov_cam;
  for (int r = 0; r < 3; ++r)
    for (int k = 0; k < 3; ++k) {
      float acc = 0.f;
      for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 2; ++j) acc += jm[i][r] * g2[i][j] * jm[j][k];
      d_cov_cam(r, k) = acc;
    }
  float gj[2][3];
  for (int i = 0; i < 2; ++i)
    for (int k = 0; k < 3; ++k) {
      float acc = 0.f;
      for (int j = 0; j < 2; ++j)
        for (int l = 0; l < 3; ++l) acc += g2[i][j] * jm[j][l] * s.cov_cam(l, k);
      gj[i][k] = 2.f * acc;
    }
  // J = [[fx/z, 0, -fx uc/z], [0, fy/z, -fy vc/z]], uc = clamp(x/z), vc = clamp(y/z).
  const float d_uc = -cam.fx / z * gj[0][2];
  const float d_vc = -cam.fy / z * gj[1][2];
  d_p.z += -cam.fx / (z * z) * gj[0][0] - cam.fy / (z * z) * gj[1][1] +
           cam.fx * s.uc / (z * z) * gj[0][2] + cam.fy * s.vc / (z * z) * gj[1][2];
  if (s.inside_u) {
    d_p.x += d_uc / z;
    d_p.z -= d_uc * s.p.x / (z * z);
  }
  if (s.inside_v) {
    d_p.y += d_vc / z;
    d_p.z -= d_vc * s.p.y / (z * z);
  }

  ProjectionGrads g;
  g.mean = matvec_t(cam.rot, d_p);
  // cov_cam = R Sigma R^T  ->  dL/dSigma = R^T dL/dcov_cam R.
  const Mat3 d_cov = matmul(matmul(transpose(cam.rot), d_cov_cam), cam.rot);
  // Sigma = M M^T  ->  dL/dM = 2 dL/dSigma M (symmetric dL/dSigma).
  Mat3 d_m = matmul(d_cov, s.m);
  for (int k = 0; k < 9; ++k) d_m.m[k] *= 2.f;
  // M = Rq diag(scale).
  const float sc[3] = {scale.x, scale.y, scale.z};
  float d_sc[3];
  Mat3 d_rq;
  for (int col = 0; col < 3; ++col) {
    d_sc[col] = s.rq(0, col) * d_m(0, col) + s.rq(1, col) * d_m(1, col) + s.rq(2, col) * d_m(2, col);
    for (int row = 0; row < 3; ++row) d_rq(row, col) = d_m(row, col) * sc[col];
  }
  g.scale = {d_sc[0], d_sc[1], d_sc[2]};
  // Rq(w, x, y, z) of the normalised quaternion.
  const float w = s.qn[0], x = s.qn[1], y = s.qn[2], zq = s.qn[3];
  const Mat3& dr = d_rq;
  float dq[4];
  dq[0] = 2.f * (-zq * dr(0, 1) + y * dr(0, 2) + zq * dr(1, 0) - x * dr(1, 2) - y * dr(2, 0) +
                 x * dr(2, 1));
  dq[1] = 2.f * (y * dr(0, 1) + zq * dr(0, 2) + y * dr(1, 0) - 2.f * x * dr(1, 1) - w * dr(1, 2) +
                 zq * dr(2, 0) + w * dr(2, 1) - 2.f * x * dr(2, 2));
  dq[2] = 2.f * (-2.f * y * dr(0, 0) + x * dr(0, 1) + w * dr(0, 2) + x * dr(1, 0) + zq * dr(1, 2) -
                 w * dr(2, 0) + zq * dr(2, 1) - 2.f * y * dr(2, 2));
  dq[3] = 2.f * (-2.f * zq * dr(0, 0) - w * dr(0, 1) + x * dr(0, 2) + w * dr(1, 0) -
                 2.f * zq * dr(1, 1) + y * dr(1, 2) + x * dr(2, 0) + y * dr(2, 1));
  // q_hat = q / |q|.
  const float proj = dq[0] * s.qn[0] + dq[1] * s.qn[1] + dq[2] * s.qn[2] + dq[3] * s.qn[3];
  for (int k = 0; k < 4; ++k) g.quat[k] = (dq[k] - s.qn[k] * proj) / s.qnorm;
  return g;
}

}  // namespace fit3d
