"""The transfer study's entry point only (``python -m tmaps.cli.transfer_study``), until ``tmaps-study`` replaces it;
every command's entry point is beside what it does, in :mod:`tmaps.commands`."""
