"""The client side of a BuildKit session: the services the daemon calls back (files, secrets, auth, health)."""
