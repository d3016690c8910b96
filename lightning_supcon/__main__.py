"""``python -m lightning_supcon`` is the ``lightning-supcon`` command."""

from lightning_supcon.cli import main

if __name__ == "__main__":
    main()
