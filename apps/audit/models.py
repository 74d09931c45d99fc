"""Models for the audit app arrive with its own issue (see DESIGN.md)."""
