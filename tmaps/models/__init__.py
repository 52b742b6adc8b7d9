from tmaps.models.wav2letter import ConvBlock, Wav2Letter

__all__ = ["ConvBlock", "Wav2Letter"]
