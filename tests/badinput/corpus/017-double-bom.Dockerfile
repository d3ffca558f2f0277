﻿FROM scratch
