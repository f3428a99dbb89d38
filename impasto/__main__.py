"""``python -m impasto ...`` is the ``impasto`` command (handy under ``torchrun -m impasto train ...``)."""

from impasto.runtime.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
