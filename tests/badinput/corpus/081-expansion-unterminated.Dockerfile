FROM scratch
ENV a=${x:-
