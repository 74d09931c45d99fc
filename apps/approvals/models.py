"""Models for the approvals app arrive with its own issue (see DESIGN.md)."""
