FROM scratch
RUN a \
  b \

  c
BOGUS
