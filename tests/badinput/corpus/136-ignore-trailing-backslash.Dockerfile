FROM scratch
COPY . /
COPY missing-file-xyz /
