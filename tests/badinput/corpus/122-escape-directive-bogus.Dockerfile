# escape=XX
FROM scratch
