FROM scratch
[2J[31mRUN[0m x
