FROM scratch
HEALTHCHECK --interval=bogus CMD x
