"""Rootless mode: a non-root user's engine runs as root of a user namespace of its own (process set-up)."""
