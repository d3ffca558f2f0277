FROM scratch
ENV a=í €
BOGUS instruction at the end
