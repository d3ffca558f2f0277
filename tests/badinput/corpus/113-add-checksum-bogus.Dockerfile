FROM scratch
ADD --checksum=sha256:zz https://example.invalid/x /x
