// Constants, small vector types and the camera shared by the CPU and CUDA builds.
//
// Everything here is header-only and compiled by both g++ and nvcc (FIT3D_HD marks
// host-device functions) so that the two builds evaluate the same arithmetic.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define FIT3D_HD __host__ __device__ __forceinline__
#else
#define FIT3D_HD inline
#endif

namespace fit3d {

// Rasterization constants (3DGS / gsplat conventions; mirrored in fit3d_jax/render/reference.py).
constexpr int kTile = 16;                    // tiles are kTile x kTile pixels
constexpr int kTilePixels = kTile * kTile;   // one CUDA block (and one CPU task) per tile
constexpr float kAlphaMin = 1.0f / 255.0f;   // contributions below this are skipped
constexpr float kAlphaMax = 0.99f;           // alpha is clamped to this
constexpr float kTransmittanceMin = 1e-4f;   // a pixel stops once transmittance would fall below
constexpr float kDilation = 0.3f;            // added to the 2D covariance diagonal (pixels^2)
constexpr float kFrustumSlack = 0.3f;        // EWA Jacobian clamps x/z, y/z to the view +30%
constexpr int kCameraParams = 24;            // viewmat(16) fx fy cx cy near far pad pad
constexpr int kMaxShDegree = 3;
constexpr int kMaxChannels = 128;            // feature channels supported by the kernels

struct Vec2 {
  float x, y;
};
struct Vec3 {
  float x, y, z;
};

FIT3D_HD Vec3 operator+(Vec3 a, Vec3 b) { return {a.x + b.x, a.y + b.y, a.z + b.z}; }
FIT3D_HD Vec3 operator-(Vec3 a, Vec3 b) { return {a.x - b.x, a.y - b.y, a.z - b.z}; }
FIT3D_HD Vec3 operator*(float s, Vec3 a) { return {s * a.x, s * a.y, s * a.z}; }
FIT3D_HD float dot(Vec3 a, Vec3 b) { return a.x * b.x + a.y * b.y + a.z * b.z; }

// Row-major 3x3 matrix.
struct Mat3 {
  float m[9];
  FIT3D_HD float operator()(int r, int c) const { return m[3 * r + c]; }
  FIT3D_HD float& operator()(int r, int c) { return m[3 * r + c]; }
};

FIT3D_HD Vec3 matvec(const Mat3& a, Vec3 v) {
  return {a(0, 0) * v.x + a(0, 1) * v.y + a(0, 2) * v.z,
          a(1, 0) * v.x + a(1, 1) * v.y + a(1, 2) * v.z,
          a(2, 0) * v.x + a(2, 1) * v.y + a(2, 2) * v.z};
}
FIT3D_HD Vec3 matvec_t(const Mat3& a, Vec3 v) {  // a^T v
  return {a(0, 0) * v.x + a(1, 0) * v.y + a(2, 0) * v.z,
          a(0, 1) * v.x + a(1, 1) * v.y + a(2, 1) * v.z,
          a(0, 2) * v.x + a(1, 2) * v.y + a(2, 2) * v.z};
}
FIT3D_HD Mat3 matmul(const Mat3& a, const Mat3& b) {
  Mat3 c;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      c(i, j) = a(i, 0) * b(0, j) + a(i, 1) * b(1, j) + a(i, 2) * b(2, j);
  return c;
}
FIT3D_HD Mat3 transpose(const Mat3& a) {
  Mat3 t;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) t(i, j) = a(j, i);
  return t;
}

// Pinhole camera, OpenCV convention (x right, y down, looking down +z). Pixel (row i, col j)
// has its centre at (j + 0.5, i + 0.5); a camera point p projects to (fx p.x/p.z + cx, ...).
struct Camera {
  Mat3 rot;  // world-to-camera rotation
  Vec3 trans;
  float fx, fy, cx, cy, near_plane, far_plane;
  int width, height;

  // params: the kCameraParams floats of fit3d_jax.render.Camera.pack().
  FIT3D_HD static Camera from_params(const float* params, int width, int height) {
    Camera c;
    for (int r = 0; r < 3; ++r)
      for (int k = 0; k < 3; ++k) c.rot(r, k) = params[4 * r + k];
    c.trans = {params[3], params[7], params[11]};
    c.fx = params[16];
    c.fy = params[17];
    c.cx = params[18];
    c.cy = params[19];
    c.near_plane = params[20];
    c.far_plane = params[21];
    c.width = width;
    c.height = height;
    return c;
  }
  // Camera centre in world coordinates: -R^T t.
  FIT3D_HD Vec3 position() const { return -1.0f * matvec_t(rot, trans); }
};

FIT3D_HD int tiles_x(int width) { return (width + kTile - 1) / kTile; }
FIT3D_HD int tiles_y(int height) { return (height + kTile - 1) / kTile; }

FIT3D_HD bool is_finite(float x) {
#if defined(__CUDA_ARCH__)
  return isfinite(x);
#else
  return std::isfinite(x);
#endif
}

FIT3D_HD float clampf(float x, float lo, float hi) { return fminf(fmaxf(x, lo), hi); }

// exp(-x) for the per-pixel Gaussian falloff: the fast hardware exponential on the GPU
// (|rel err| < 2e-6 over the range that passes the alpha threshold), libm on the host.
FIT3D_HD float exp_neg(float x) {
#if defined(__CUDA_ARCH__)
  return __expf(-x);
#else
  return std::exp(-x);
#endif
}

}  // namespace fit3d
