FROM scratch
RUN --mount=type=cache,target=/x,sharing=everyone true
