FROM scrétch
