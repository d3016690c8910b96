"""``python -m lightning_supcon.encoder_files`` is the ``lightning-supcon-export`` command
(:func:`lightning_supcon.encoder_files.export.main`)."""

from lightning_supcon.encoder_files.export import main

if __name__ == "__main__":
    main()
