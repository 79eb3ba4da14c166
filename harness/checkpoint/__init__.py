"""Checkpoints: torch_dist save/load with resharding, atomic commits."""
