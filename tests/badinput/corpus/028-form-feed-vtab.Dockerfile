FROM scratch
RUN x
BOGUS
