// CPU projection stage: EWA projection + SH colour per Gaussian, and its backward.
#include "fit3d/projection.h"
#include "fit3d/sh.h"
#include "kernels.h"
#include "parallel.h"

namespace fit3d::cpu {

static Vec3 load3(const float* p, int64_t i) { return {p[3 * i], p[3 * i + 1], p[3 * i + 2]}; }

void project_forward(const ProjectArgs& a, const ProjectOutputs& out) {
  const Vec3 cam_pos = a.camera.position();
  parallel_range(a.num_gaussians, [&](int64_t i) {
    Projected p;
    const bool visible = project_gaussian(a.camera, load3(a.means, i), load3(a.scales, i),
                                          a.quats + 4 * i, a.opacities[i], &p);
    out.means2d[2 * i] = p.mean2d.x;
    out.means2d[2 * i + 1] = p.mean2d.y;
    for (int k = 0; k < 3; ++k) out.conics[3 * i + k] = p.conic[k];
    out.depths[i] = p.depth;
    out.extents[2 * i] = p.extent.x;
    out.extents[2 * i + 1] = p.extent.y;
    out.radii[i] = p.radius;
    float color[3] = {0.f, 0.f, 0.f};
    if (visible || !is_finite(p.depth))  // NaN inputs propagate so validation reports them
      sh_to_color(a.sh_degree, load3(a.means, i), cam_pos, a.sh + 3 * a.sh_coeffs * i, color);
    for (int k = 0; k < 3; ++k) out.colors[3 * i + k] = color[k];
  });
}

void project_backward(const ProjectArgs& a, const ProjectCotangents& cot, const ProjectGrads& g) {
  const Vec3 cam_pos = a.camera.position();
  const int k3 = 3 * a.sh_coeffs;
  parallel_range(a.num_gaussians, [&](int64_t i) {
    Projected p;
    const Vec3 mean = load3(a.means, i);
    const bool visible =
        project_gaussian(a.camera, mean, load3(a.scales, i), a.quats + 4 * i, a.opacities[i], &p);
    float* d_sh = g.sh + k3 * i;
    if (!visible) {
      for (int k = 0; k < 3; ++k) g.means[3 * i + k] = g.scales[3 * i + k] = 0.f;
      for (int k = 0; k < 4; ++k) g.quats[4 * i + k] = 0.f;
      for (int k = 0; k < k3; ++k) d_sh[k] = 0.f;
      return;
    }
    const ProjectionGrads pg = project_gaussian_backward(
        a.camera, mean, load3(a.scales, i), a.quats + 4 * i,
        {cot.means2d[2 * i], cot.means2d[2 * i + 1]}, cot.conics + 3 * i, cot.depths[i]);
    const Vec3 d_mean_sh = sh_to_color_backward(a.sh_degree, a.sh_coeffs, mean, cam_pos,
                                                a.sh + k3 * i, cot.colors + 3 * i, d_sh);
    const Vec3 d_mean = pg.mean + d_mean_sh;
    g.means[3 * i] = d_mean.x;
    g.means[3 * i + 1] = d_mean.y;
    g.means[3 * i + 2] = d_mean.z;
    g.scales[3 * i] = pg.scale.x;
    g.scales[3 * i + 1] = pg.scale.y;
    g.scales[3 * i + 2] = pg.scale.z;
    for (int k = 0; k < 4; ++k) g.quats[4 * i + k] = pg.quat[k];
  });
}

}  // namespace fit3d::cpu
