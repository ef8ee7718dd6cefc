"""wtours: the Walking Tours dataset toolkit (fetch, shard, stats, verify)."""

__version__ = "0.1.0"
