"""Training: the configs and presets, the model (timm's ViT with its last block's queries and keys), object
discovery and tracking, the loss, the clip stream, the schedules, one step, the loop, the log, the bench."""
