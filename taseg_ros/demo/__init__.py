"""The zero-download demo: procedural RGB-T street scenes, training, evaluation, node run."""
