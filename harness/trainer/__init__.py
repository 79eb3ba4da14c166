"""trainer room (see DESIGN.md)."""
