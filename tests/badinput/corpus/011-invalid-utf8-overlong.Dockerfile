FROM scratch
COPY À¯À® /x
BOGUS instruction at the end
