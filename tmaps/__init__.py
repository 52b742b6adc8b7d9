"""tmaps: train and look inside convolutional speech recognisers."""

__version__ = "0.1.0"
