"""The TASeg network, built from segment_anything modules (one module per idea of the paper; see the README)."""
