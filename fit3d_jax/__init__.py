"""fit3d_jax: FiT3D (3D-aware fine-tuning of 2D foundation features) in JAX."""

__version__ = "0.1.0"
