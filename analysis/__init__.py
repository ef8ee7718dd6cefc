"""analysis: figures and tables drawn from `wtours stats` outputs (runs standalone on saved tables)."""
