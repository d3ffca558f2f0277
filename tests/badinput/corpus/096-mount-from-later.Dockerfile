FROM scratch AS a
RUN --mount=from=b,target=/x true
FROM scratch AS b
FROM a
