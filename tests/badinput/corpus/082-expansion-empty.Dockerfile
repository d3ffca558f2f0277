FROM scratch
ENV a=${}
