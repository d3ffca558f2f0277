# syntax=127.0.0.1:9/frontend
FROM scratch
BOGUS
