"""Models for the handoffs app arrive with its own issue (see DESIGN.md)."""
