"""workers room (see DESIGN.md)."""
