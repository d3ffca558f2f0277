FROM 127.0.0.1:9/nope:latest
