FROM scratch
ÿþ COPY a b
