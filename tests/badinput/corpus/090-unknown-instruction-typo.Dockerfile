FROM scratch
RUNN true
