"""Layers like dive: what each layer of an image adds, changes and removes, the bytes later layers waste, and
the image's efficiency (`analysis`); where layers are read from: a build's snapshot chain, a stored or pulled
image, an OCI or docker archive (`sources`); the table and the JSON (`report`); `workbench inspect layers`
(`cli`)."""
