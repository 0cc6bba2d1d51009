"""The bone catalog is the one source of truth."""
import numpy as np

from X2BRLib import anatomy


def test_the_catalog_holds_the_bones_of_a_chest_film():
    groups = [b.group for b in anatomy.BONES]
    assert groups.count("rib") == 24
    assert groups.count("vertebra") == 14
    assert groups.count("sternum") == 1
    for g in ("clavicle", "scapula", "humerus"):
        assert groups.count(g) == 2
    assert anatomy.NUM_CLASSES == len(anatomy.BONES) + 1


def test_labels_names_and_codes_are_unique_and_stable():
    labels = [b.label for b in anatomy.BONES]
    assert labels == list(range(1, len(labels) + 1))
    assert len({b.name for b in anatomy.BONES}) == len(labels)
    assert anatomy.bone("rib_left_1").label == 1
    assert anatomy.bone("vertebra_C7").label == 25
    assert anatomy.bone(45).name == "humerus_right"


def test_every_bone_has_a_colour_and_snomed_terminology():
    for b in anatomy.BONES:
        assert all(0 <= c <= 1 for c in b.color_rgb)
        term = b.slicer_terminology_string()
        assert f"SCT^{b.sct_code}^" in term and term.count("~") == 6


def test_totalsegmentator_ids_map_to_catalog_labels():
    lut = anatomy.totalseg_to_catalog_lut()
    assert lut[92] == anatomy.bone("rib_left_1").label
    assert lut[44] == anatomy.bone("vertebra_C7").label
    assert lut[116] == anatomy.bone("sternum").label
    assert lut[51] == 0  # heart is not a bone
    assert np.count_nonzero(lut) == len(anatomy.BONES)
