"""Experiments behind tmaps' claims: runs and their committed records (:mod:`tmaps.studies.runs`),
statistics over utterances and seeds (:mod:`tmaps.studies.stats`), and one module per study."""
