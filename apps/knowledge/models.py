"""Models for the knowledge app arrive with its own issue (see DESIGN.md)."""
