"""Models for the evals app arrive with its own issue (see DESIGN.md)."""
