"""The bone catalog: the one source of truth for every bone X2BR reconstructs.

Each bone has a stable label value (used in label volumes, occupancy samples,
network outputs and segmentation files), a machine name, a display name, the
TotalSegmentator structure name it is read from, a display colour and DICOM /
SNOMED CT terminology codes so that 3D Slicer names and colours segments
properly.

Label values never change once released: new bones get new values.
Label 0 is background.

Scope: the bones a chest PA/AP radiograph shows: 24 ribs, the vertebrae from C7
to L1, the sternum, clavicles, scapulae and the proximal humeri. Costal
cartilage is not in the catalog: it is not trained or evaluated (it is barely
visible on a radiograph).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

# SNOMED CT codes (scheme "SCT"). Category and type as used by Slicer's
# terminology ("Tissue" / "Bone" style entries for anatomical structures).
SCT = "SCT"
CATEGORY = ("123037004", SCT, "Anatomical Structure")


@dataclass(frozen=True)
class Bone:
    """One catalog entry.

    label: int, stable label value (1..255).
    name: machine name, used for file names (``rib_left_3``).
    display_name: human name (``Left 3rd rib``).
    group: ``rib`` | ``vertebra`` | ``sternum`` | ``clavicle`` | ``scapula`` | ``humerus``.
    totalseg_name: TotalSegmentator structure name this bone is read from.
    color_rgb: display colour, three floats in [0, 1].
    sct_code / sct_meaning: SNOMED CT type code of the structure.
    laterality: ``left`` | ``right`` | ``""``.
    order: position along the body axis within its group (rib number, vertebra
        index from C7 = 0 downwards), used by consistency metrics.
    """

    label: int
    name: str
    display_name: str
    group: str
    totalseg_name: str
    color_rgb: tuple[float, float, float]
    sct_code: str
    sct_meaning: str
    laterality: str = ""
    order: int = 0

    @property
    def terminology(self) -> dict:
        """DICOM code triplets (CodeValue, CodingSchemeDesignator, CodeMeaning)."""
        lat = {
            "left": ("7771000", SCT, "Left"),
            "right": ("24028007", SCT, "Right"),
        }.get(self.laterality)
        return {
            "category": CATEGORY,
            "type": (self.sct_code, SCT, self.sct_meaning),
            "type_modifier": lat,
        }

    def slicer_terminology_string(self) -> str:
        """Slicer's serialised terminology entry for a segment (Segmentations module
        ``TerminologyEntry`` tag): context~category~type~type-modifier~anatomic context~region~region-modifier."""
        def triplet(t):
            return "^^" if t is None else f"{t[1]}^{t[0]}^{t[2]}"

        term = self.terminology
        return "~".join([
            "Segmentation category and type - 3D Slicer General Anatomy list",
            triplet(term["category"]),
            triplet(term["type"]),
            triplet(term["type_modifier"]),
            "Anatomic codes - DICOM master list",
            "^^", "^^",
        ])


_ORDINAL = {1: "1st", 2: "2nd", 3: "3rd"}


def _ordinal(n: int) -> str:
    return _ORDINAL.get(n, f"{n}th")


# SNOMED CT codes for individual ribs 1..12 and vertebrae (concept ids).
_RIB_SCT = {
    1: ("48535007", "First rib"), 2: ("78247007", "Second rib"), 3: ("25888004", "Third rib"),
    4: ("25523003", "Fourth rib"), 5: ("15339008", "Fifth rib"), 6: ("59558009", "Sixth rib"),
    7: ("24915002", "Seventh rib"), 8: ("5953002", "Eighth rib"), 9: ("22565002", "Ninth rib"),
    10: ("77644006", "Tenth rib"), 11: ("58830002", "Eleventh rib"), 12: ("43993008", "Twelfth rib"),
}
_VERTEBRA_SCT = {
    "C7": ("87391001", "C7 vertebra"), "T1": ("64864005", "T1 vertebra"),
    "T2": ("53733008", "T2 vertebra"), "T3": ("1626008", "T3 vertebra"),
    "T4": ("73071006", "T4 vertebra"), "T5": ("56401006", "T5 vertebra"),
    "T6": ("45296009", "T6 vertebra"), "T7": ("62487009", "T7 vertebra"),
    "T8": ("11068009", "T8 vertebra"), "T9": ("82687006", "T9 vertebra"),
    "T10": ("7610001", "T10 vertebra"), "T11": ("12989004", "T11 vertebra"),
    "T12": ("23215003", "T12 vertebra"), "L1": ("66794005", "L1 vertebra"),
}
_VERTEBRAE = ["C7"] + [f"T{i}" for i in range(1, 13)] + ["L1"]


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return (round(r, 3), round(g, 3), round(b, 3))


def _build() -> tuple[Bone, ...]:
    bones: list[Bone] = []
    label = 1
    for side in ("left", "right"):
        for n in range(1, 13):
            code, meaning = _RIB_SCT[n]
            # ribs: warm bone tones alternating so neighbours are told apart
            colour = _hsv((0.06 if side == "left" else 0.11) + 0.01 * n,
                          0.35 + 0.25 * (n % 2), 0.95 - 0.02 * n)
            bones.append(Bone(label, f"rib_{side}_{n}", f"{side.capitalize()} {_ordinal(n)} rib",
                              "rib", f"rib_{side}_{n}", colour, code, meaning, side, n))
            label += 1
    for i, v in enumerate(_VERTEBRAE):
        code, meaning = _VERTEBRA_SCT[v]
        bones.append(Bone(label, f"vertebra_{v}", f"{v} vertebra", "vertebra",
                          f"vertebrae_{v}", _hsv(0.55 + 0.025 * i, 0.45 + 0.2 * (i % 2), 0.9),
                          code, meaning, "", i))
        label += 1
    bones.append(Bone(label, "sternum", "Sternum", "sternum", "sternum",
                      (0.87, 0.71, 0.53), "56873002", "Sternum"))
    label += 1
    for group, ts, code, meaning, colours in (
        ("clavicle", "clavicula", "51299004", "Clavicle", ((0.40, 0.75, 0.40), (0.30, 0.62, 0.30))),
        ("scapula", "scapula", "79601000", "Scapula", ((0.75, 0.55, 0.85), (0.62, 0.42, 0.72))),
        ("humerus", "humerus", "85050009", "Humerus", ((0.95, 0.85, 0.40), (0.85, 0.72, 0.28))),
    ):
        for side, colour in zip(("left", "right"), colours):
            bones.append(Bone(label, f"{group}_{side}", f"{side.capitalize()} {group}", group,
                              f"{ts}_{side}", colour, code, meaning, side))
            label += 1
    return tuple(bones)


BONES: tuple[Bone, ...] = _build()
NUM_CLASSES = len(BONES) + 1  # background + bones


@lru_cache(maxsize=None)
def by_name() -> dict[str, Bone]:
    return {b.name: b for b in BONES}


@lru_cache(maxsize=None)
def by_label() -> dict[int, Bone]:
    return {b.label: b for b in BONES}


def bone(key: str | int) -> Bone:
    """Look a bone up by machine name or label value; raises KeyError naming the key."""
    table = by_label() if isinstance(key, int) else by_name()
    try:
        return table[key]
    except KeyError:
        raise KeyError(f"no bone {key!r} in the X2BR catalog") from None


def group(name: str) -> list[Bone]:
    return [b for b in BONES if b.group == name]


# TotalSegmentator v2 structure ids (``total`` task, 117 classes). Used when a
# label map carries the standard ids and no name table comes with it.
TOTALSEG_V2_IDS: dict[str, int] = {
    "humerus_left": 69, "humerus_right": 70, "scapula_left": 71, "scapula_right": 72,
    "clavicula_left": 73, "clavicula_right": 74, "sternum": 116,
    **{f"vertebrae_{v}": i for v, i in zip(
        ["L5", "L4", "L3", "L2", "L1", "T12", "T11", "T10", "T9", "T8", "T7", "T6", "T5",
         "T4", "T3", "T2", "T1", "C7"], range(27, 45))},
    **{f"rib_left_{n}": 91 + n for n in range(1, 13)},
    **{f"rib_right_{n}": 103 + n for n in range(1, 13)},
}


def totalseg_to_catalog_lut(name_to_id: dict[str, int] | None = None):
    """Lookup table (uint8 array of 256) from TotalSegmentator ids to catalog labels.

    name_to_id: TotalSegmentator structure name -> id in the label map; the
    standard v2 ids when None. Structures not in the catalog map to 0.
    """
    import numpy as np

    table = TOTALSEG_V2_IDS if name_to_id is None else name_to_id
    lut = np.zeros(256, np.uint8)
    for b in BONES:
        ts_id = table.get(b.totalseg_name)
        if ts_id is not None and 0 <= ts_id < 256:
            lut[ts_id] = b.label
    return lut
