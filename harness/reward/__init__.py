"""reward room (see DESIGN.md)."""
