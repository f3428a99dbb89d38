"""Operations: the algorithms behind `impasto paint`, `texture`, `stylize`, ..."""
