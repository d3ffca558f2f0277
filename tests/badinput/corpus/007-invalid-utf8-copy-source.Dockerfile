FROM scratch
COPY café /x
