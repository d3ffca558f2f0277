"""`workbench gha-server`: a local emulator of GitHub Actions' cache services (v1 REST, v2 Twirp + blobs)."""
