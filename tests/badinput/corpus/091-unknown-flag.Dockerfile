FROM scratch
COPY --bogus=1 a b
