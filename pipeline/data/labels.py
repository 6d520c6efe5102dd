"""The ILSVRC-2012 label map: synset <-> 1-based label <-> 0-based class index.

The reference converter (`build_imagenet_data.py`) numbers the sorted synset list from 1, keeping 0
for a "background" class nobody uses; NVIDIA's input pipeline subtracts 1 to get the class index the
model predicts. Both numberings appear in the pipeline, so the conversions live here and nowhere else.
Names are not unique ("crane" is a bird and a machine), so the synset is always the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from importlib import resources

NUM_CLASSES = 1000
SYNSETS_FILE = "imagenet_lsvrc_2015_synsets.txt"
NAMES_FILE = "imagenet_synset_to_human.txt"


@dataclass(frozen=True)
class LabelMap:
    """The 1000 synsets in label order, with their human-readable names."""

    synsets: tuple[str, ...]
    names: tuple[str, ...]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # A wrong list silently shifts every label, so refuse anything but the exact shape.
        if len(self.synsets) != NUM_CLASSES:
            raise ValueError(f"label map: expected {NUM_CLASSES} synsets, got {len(self.synsets)}")
        if list(self.synsets) != sorted(set(self.synsets)):
            raise ValueError("label map: synsets must be unique and sorted")
        if len(self.names) != len(self.synsets):
            raise ValueError("label map: every synset needs exactly one name")
        object.__setattr__(self, "_index", {s: i for i, s in enumerate(self.synsets)})

    def label(self, synset: str) -> int:
        """The 1-based label that `build_imagenet_data.py` writes for `synset`."""
        try:
            return self._index[synset] + 1
        except KeyError:
            raise KeyError(f"unknown synset {synset!r}: not one of the 1000 ILSVRC-2012 classes") from None

    def synset(self, label: int) -> str:
        self._check_label(label)
        return self.synsets[label - 1]

    def name(self, label: int) -> str:
        self._check_label(label)
        return self.names[label - 1]

    @staticmethod
    def class_index(label: int) -> int:
        """The model's output index for a record label (label - 1, as NVIDIA's pipeline does)."""
        LabelMap._check_label(label)
        return label - 1

    @staticmethod
    def _check_label(label: int) -> None:
        if not 1 <= label <= NUM_CLASSES:
            raise ValueError(f"label {label} out of range 1..{NUM_CLASSES}")

    def __len__(self) -> int:
        return len(self.synsets)


def _read_resource(name: str) -> list[str]:
    text = resources.files("pipeline.data.resources").joinpath(name).read_text(encoding="ascii")
    return [line for line in text.splitlines() if line.strip()]


@cache
def load_label_map() -> LabelMap:
    """The packaged ILSVRC-2012 label map (read once per process)."""
    synsets = tuple(line.strip() for line in _read_resource(SYNSETS_FILE))
    pairs = [line.split("\t", 1) for line in _read_resource(NAMES_FILE)]
    by_synset = {synset: name for synset, name in pairs}
    missing = [s for s in synsets if s not in by_synset]
    if missing:
        raise ValueError(f"{NAMES_FILE}: no name for synset {missing[0]}")
    return LabelMap(synsets=synsets, names=tuple(by_synset[s] for s in synsets))
