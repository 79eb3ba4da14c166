"""rollout room (see DESIGN.md)."""
