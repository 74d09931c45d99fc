"""Models for the runtime app arrive with its own issue (see DESIGN.md)."""
