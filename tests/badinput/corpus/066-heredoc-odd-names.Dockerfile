FROM scratch
RUN <<'E O F' <<"" <<-\x
E O F

x
BOGUS
