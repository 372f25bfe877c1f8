"""`taseg bag eval`: a model on every pair of a recording (see run.py)."""
