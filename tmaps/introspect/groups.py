"""Groupings: which frames of which utterances belong to which group of a profile.

A grouping turns a manifest record (docs/design.md) into segments ``(label, start_s, end_s)``.
Frame-level groupings (phonemes, characters, words) give one segment per unit of speech; the
frames a segment covers at a layer follow from ``tmaps.introspect.frames``. Utterance-level
groupings (speaker, language, any record field) give one label per utterance, covering all its
valid frames; their onset (for time-resolved profiles) is the utterance's first frame.

Built-in names (``resolve_grouping``):

- ``"phoneme"``: the record's ``phonemes`` segments, labelled by espeak symbol;
- ``"phoneme_class"``: the same segments labelled by ``phoneme_class`` (vowel, plosive, ...);
- ``"word"``: the record's ``words`` segments;
- ``"character"``: the record's ``characters`` segments (from forced alignment, see
  ``tmaps.introspect.alignment``) or, when the record has none, each word's span divided evenly
  among its characters;
- any other name: that record field, utterance-level.

Each grouping declares the record ``fields`` it reads, whether forced alignment can supply
them (``alignable``), the ``reference`` classes its groups are scored against (phoneme
classes for phonemes) and how map panels of its groups are titled and ordered (``panels``:
phonemes in IPA, ordered by phonetic class, one section per class), so that no caller tests
grouping names.

Custom groupings subclass ``Grouping`` or pass a ``label`` callable to the classes below (for
example phoneme classes of your own, or correct-vs-wrong utterances).
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from tmaps.introspect.phonemes import PHONEME_CLASSES, ipa_label, phoneme_class, phonetic_order

log = logging.getLogger(__name__)

Segment = tuple[str, float, float]
Alignments = Mapping[str, Mapping[str, Sequence[Sequence]]]


@dataclass(frozen=True)
class Panels:
    """How the map panels of some groups are titled and ordered (``plot_maps``' labels, ``order`` and ``sections``).

    Attributes:
        labels: a title per group, in the groups' order.
        order: the groups in the order drawn; ``None``: as given.
        sections: a section per group (e.g. its phoneme class); each section starts a row. ``None``: none.
    """

    labels: list[str]
    order: list[int] | None = None
    sections: list[str] | None = None


def phoneme_panels(symbols: Sequence[str], language: str = "en") -> Panels:
    """Panels of phoneme groups: IPA titles (:func:`ipa_label`; the espeak code added where two share one), ordered and sectioned by phonetic class.

    A symbol without IPA or class keeps espeak's codes in the given order, with a warning naming it.
    """
    try:
        sounds = [ipa_label(symbol, language) for symbol in symbols]
        return Panels(
            [sound if sounds.count(sound) == 1 else f"{sound} ({symbol})" for sound, symbol in zip(sounds, symbols)],
            phonetic_order(list(symbols), language),
            [phoneme_class(symbol) for symbol in symbols],
        )
    except ValueError as error:
        log.warning("phoneme maps keep espeak's codes: %s", error)
        return Panels(list(symbols))


def phoneme_class_panels(classes: Sequence[str], language: str = "en") -> Panels:
    """Panels of phoneme-class groups, in the order of ``PHONEME_CLASSES`` (vowels first)."""
    rank = {name: index for index, name in enumerate(PHONEME_CLASSES)}
    return Panels(list(classes), sorted(range(len(classes)), key=lambda index: rank.get(classes[index], len(rank))))


class Grouping(ABC):
    """How the frames of utterances fall into groups.

    Attributes:
        name: what the groups are (stored in the profiles' metadata).
        frame_level: ``True`` when segments are times within the utterance, ``False`` when a
            segment stands for the whole utterance.
        labels: groups known in advance; they appear in the profiles even without frames
            (reported as empty). Labels met in the data are added after them.
        fields: the record fields the groups come from; a record needs any one of them.
        alignable: whether CTC forced alignment (:mod:`tmaps.introspect.alignment`) can supply
            ``fields`` for records that lack them (characters and words can, phonemes cannot).
        reference: the reference class of a group (e.g. :func:`phoneme_class` of a phoneme),
            against which clusters of the groups' profiles are scored (ARI); ``None``: no
            reference classes.
        describe_panels: ``(groups, language) -> Panels`` for maps of the groups (e.g.
            :func:`phoneme_panels`); ``None``: panels titled by the group names.
    """

    name: str
    frame_level: bool = True
    labels: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()
    alignable: bool = False
    reference: Callable[[str], str] | None = None
    describe_panels: Callable[[Sequence[str], str], Panels] | None = None

    def panels(self, groups: Sequence[str], language: str = "en") -> Panels:
        """How map panels of ``groups`` are titled, ordered and sectioned: by ``describe_panels``, else by the group names."""
        return self.describe_panels(groups, language) if self.describe_panels else Panels([str(group) for group in groups])

    @abstractmethod
    def segments(self, record: Mapping) -> list[Segment]:
        """Segments ``(label, start_s, end_s)`` of one record (times ignored when not frame-level)."""


def _relabel(label: Callable[[str], str | None] | None, segments: list[Segment]) -> list[Segment]:
    if label is None:
        return segments
    relabelled = ((label(name), start, end) for name, start, end in segments)
    return [(name, start, end) for name, start, end in relabelled if name is not None]


class SegmentGrouping(Grouping):
    """Frame-level groups from a list of segments ``[label, start_s, end_s]`` in each record.

    Args:
        field: the record key holding the segments (``"phonemes"``, ``"words"``, ``"characters"``).
        label: maps a segment's label to its group (``None`` drops the segment); identity if not given.
        labels: groups known in advance.
        alignments: segments by record id (``tmaps.introspect.alignment.align`` output),
            used instead of the records' own.
        name: the grouping's name; ``field`` if not given.
        alignable, reference, describe_panels: see :class:`Grouping`.
    """

    def __init__(
        self,
        field: str,
        label: Callable[[str], str | None] | None = None,
        labels: Sequence[str] = (),
        alignments: Alignments | None = None,
        name: str | None = None,
        alignable: bool = False,
        reference: Callable[[str], str] | None = None,
        describe_panels: Callable[[Sequence[str], str], Panels] | None = None,
    ) -> None:
        self.field = field
        self.fields = (field,)
        self.label = label
        self.labels = tuple(labels)
        self.alignments = alignments
        self.name = name or field
        self.alignable = alignable
        self.reference = reference
        self.describe_panels = describe_panels

    def _source(self, record: Mapping) -> Mapping:
        if self.alignments is None:
            return record
        try:
            return self.alignments[record["id"]]
        except KeyError:
            raise ValueError(f"the alignments have no entry for record {record.get('id')!r}") from None

    def _raw_segments(self, record: Mapping) -> list[Segment]:
        segments = self._source(record).get(self.field)
        if not segments:
            raise ValueError(
                f"record {record.get('id')!r} has no {self.field!r} segments, which the {self.name!r} grouping needs; "
                "corpora without segments need forced alignment first (tmaps.introspect.alignment)"
            )
        return [(str(name), float(start), float(end)) for name, start, end in segments]

    def segments(self, record: Mapping) -> list[Segment]:
        return _relabel(self.label, self._raw_segments(record))


class CharacterGrouping(SegmentGrouping):
    """Frame-level character groups: aligned ``characters`` segments, or words spread evenly.

    A record (or ``alignments`` entry) with ``characters`` segments uses them. Otherwise each
    word segment ``[word, start, end]`` is cut into ``len(word)`` equal parts, one per
    character; spaces between words belong to no character. Same arguments as
    ``SegmentGrouping`` without ``field``.
    """

    def __init__(
        self,
        label: Callable[[str], str | None] | None = None,
        labels: Sequence[str] = (),
        alignments: Alignments | None = None,
        name: str = "character",
    ) -> None:
        super().__init__("characters", label, labels, alignments, name, alignable=True)
        self.fields = ("characters", "words")

    def _raw_segments(self, record: Mapping) -> list[Segment]:
        source = self._source(record)
        if source.get("characters"):
            return super()._raw_segments(record)
        if not source.get("words"):
            raise ValueError(
                f"record {record.get('id')!r} has neither 'characters' nor 'words' segments, which the character "
                "grouping needs; align the corpus first (tmaps.introspect.alignment)"
            )
        segments = []
        for word, start, end in source["words"]:
            step = (float(end) - float(start)) / len(word)
            segments += [(char, start + i * step, start + (i + 1) * step) for i, char in enumerate(word)]
        return segments


class RecordGrouping(Grouping):
    """Utterance-level groups: one label per record.

    Args:
        field: the record key whose value is the group (``"speaker"``, ``"language"``, ...).
        label: computes the group from the record instead (``None`` skips the record).
        labels: groups known in advance.
        name: the grouping's name; ``field`` if not given.
    """

    frame_level = False

    def __init__(
        self,
        field: str | None = None,
        label: Callable[[Mapping], str | None] | None = None,
        labels: Sequence[str] = (),
        name: str | None = None,
    ) -> None:
        if (field is None) == (label is None):
            raise ValueError("give either a record field or a label function")
        self.field = field
        self.fields = () if field is None else (field,)
        self.label = label
        self.labels = tuple(labels)
        self.name = name or field or getattr(label, "__name__", "label")

    def segments(self, record: Mapping) -> list[Segment]:
        if self.label is not None:
            group = self.label(record)
            return [] if group is None else [(str(group), 0.0, math.inf)]
        if self.field not in record:
            raise ValueError(
                f"record {record.get('id')!r} has no field {self.field!r} to group by; its fields are {sorted(record)}"
            )
        return [(str(record[self.field]), 0.0, math.inf)]


def resolve_grouping(groups: str | Grouping, alignments: Alignments | None = None) -> Grouping:
    """The ``Grouping`` for a built-in name or record field (see the module docstring); the only factory.

    Args:
        groups: a name, or a ``Grouping`` (returned as it is).
        alignments: forced-alignment segments by record id; the alignable groupings
            (``character``, ``word``) read their segments from them instead of the records.
    """
    if isinstance(groups, Grouping):
        return groups
    builtin = {
        "phoneme": lambda: SegmentGrouping("phonemes", name="phoneme", reference=phoneme_class, describe_panels=phoneme_panels),
        "phoneme_class": lambda: SegmentGrouping(
            "phonemes", label=phoneme_class, labels=PHONEME_CLASSES, name="phoneme_class", describe_panels=phoneme_class_panels
        ),
        "word": lambda: SegmentGrouping("words", name="word", alignments=alignments, alignable=True),
        "character": lambda: CharacterGrouping(alignments=alignments),
    }
    if groups in builtin:
        return builtin[groups]()
    return RecordGrouping(field=groups)
