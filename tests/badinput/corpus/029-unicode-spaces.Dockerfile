FROM scratch
RUN x
