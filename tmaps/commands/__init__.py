"""What the ``tmaps-*`` commands do, one module per command; ``tmaps.cli`` holds their thin Hydra entry points."""
