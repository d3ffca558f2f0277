FROM scratch
RUN --device=,,, true
