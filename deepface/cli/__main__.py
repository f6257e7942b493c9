"""``python -m deepface.cli``: the ``deepface`` command (subprocess tests and the image use it)."""

from deepface.cli import main

main()
