"""The TASeg network, built from segment_anything modules (see DESIGN section 1)."""
