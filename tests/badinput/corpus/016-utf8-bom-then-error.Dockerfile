FROM scratch
BOGUS instruction at the end
