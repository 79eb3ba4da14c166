"""algorithms room (see DESIGN.md)."""
