"""Models for the guardrails app arrive with its own issue (see DESIGN.md)."""
