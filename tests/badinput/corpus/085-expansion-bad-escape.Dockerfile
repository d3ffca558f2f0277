FROM scratch
ARG x=abc
ENV a=${x/\q/z}
