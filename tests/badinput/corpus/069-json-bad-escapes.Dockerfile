FROM scratch
CMD ["\ud800", "\uZZZZ", "\x00"]
BOGUS
