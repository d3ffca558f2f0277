	

FROM scratch
