# café
FROM scratch
Ã
BOGUS instruction at the end
