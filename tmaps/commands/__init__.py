"""Each command's logic; tmaps.cli holds their thin entry points."""
