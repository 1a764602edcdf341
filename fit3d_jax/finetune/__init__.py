"""Stage II: 3D-aware fine-tuning of DINOv2 on features rendered from the stage I store."""
