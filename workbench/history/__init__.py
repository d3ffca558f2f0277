"""Build history: the sessions the recorder leaves under ROOT/history, and the commands that read them."""
