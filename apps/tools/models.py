"""Models for the tools app arrive with its own issue (see DESIGN.md)."""
