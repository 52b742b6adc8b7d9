"""What each command does with its composed config; ``tmaps.cli`` holds the thin Hydra entry points."""
