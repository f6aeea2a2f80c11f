"""Server layer: listeners, per-connection loops, graceful start and stop."""
