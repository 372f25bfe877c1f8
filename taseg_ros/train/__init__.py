"""Training: recipes (YAML), the CE + Dice loss, and the training loop (`taseg train`)."""
