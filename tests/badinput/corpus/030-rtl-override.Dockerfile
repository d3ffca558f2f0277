FROM scratch
LABEL a=‮evil‬
BOGUS
