FROM scratch
RUN --network=bogus true
