# check=error=maybe;skip=
FROM scratch
