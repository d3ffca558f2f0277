# syntax=docker/dockerfile:1
FROM scratch
RUN <<EOF
line
BOGUS
