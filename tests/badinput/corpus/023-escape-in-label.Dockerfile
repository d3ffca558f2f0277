FROM scratch
LABEL a=]0;title
BOGUS instruction at the end
