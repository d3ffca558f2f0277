FROM scratch
ENV a=${UNSET:?this variable is required}
