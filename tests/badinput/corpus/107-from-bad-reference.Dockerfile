FROM UPPER/Case:Tag@sha256:zz
