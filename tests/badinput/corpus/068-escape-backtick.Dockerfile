# escape=`
FROM scratch
RUN a ``````` `
`
x
BOGUS
