"""Secrets the platform owns: where they are kept, and how they are rotated."""
