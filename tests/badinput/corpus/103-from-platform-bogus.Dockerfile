FROM --platform=bogus/arch/x/y scratch
BOGUS
