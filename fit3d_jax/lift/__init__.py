"""Stage I: lifting DINOv2 features of a scene into 3D feature Gaussians (``fit.fit_scene``)."""
