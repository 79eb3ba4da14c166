"""tracking room (see DESIGN.md)."""
