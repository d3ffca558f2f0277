FROM scratch
RUN --mount=type=bind true
