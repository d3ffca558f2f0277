FROM scratch
ARG x=abc
ENV a=${x:0:1} b=${x^^} c=${!x}
