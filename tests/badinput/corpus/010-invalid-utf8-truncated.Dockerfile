FROM scratch
LABEL a=â‚
BOGUS instruction at the end
â