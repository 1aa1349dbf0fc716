"""Distillation losses as pure tensor functions (see ../science.md)."""
