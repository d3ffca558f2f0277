FROM scratch
CMD ["a", 
BOGUS
