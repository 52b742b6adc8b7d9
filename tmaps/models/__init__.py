from tmaps.models.wav2letter import ConvBlock, Wav2Letter, wav2letter_paper, wav2letter_small

__all__ = ["ConvBlock", "Wav2Letter", "wav2letter_paper", "wav2letter_small"]
