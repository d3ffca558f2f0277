FROM scratch
LABEL a=ÿþý
BOGUS instruction at the end
