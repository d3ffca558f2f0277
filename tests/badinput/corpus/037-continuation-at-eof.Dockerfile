FROM scratch
COPY a \