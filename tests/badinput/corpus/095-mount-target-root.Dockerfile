FROM scratch
RUN --mount=type=tmpfs,target=/ true
