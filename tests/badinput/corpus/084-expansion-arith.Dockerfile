FROM scratch
ENV a=$((1+1))
BOGUS
