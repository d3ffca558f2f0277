FROM scratch
COPY <<A /a
<<B
B
A
BOGUS
