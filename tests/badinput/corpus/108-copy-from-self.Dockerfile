FROM scratch AS a
COPY --from=a /x /y
