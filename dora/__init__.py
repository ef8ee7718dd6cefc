"""dora: DoRA self-supervised training (discover and track objects in long videos)."""

__version__ = "0.1.0"
