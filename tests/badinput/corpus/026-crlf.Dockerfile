FROM scratch
COPY a /a
BOGUS x
