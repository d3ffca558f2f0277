FROM scratch
RUN --security=bogus true
