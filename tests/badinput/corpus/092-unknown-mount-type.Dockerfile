FROM scratch
RUN --mount=type=bogus,target=/x true
