"""The cross-patient mean-skeleton baseline of `x2br evaluate` (X2BRLib.x2b.evaluate.mean_skeleton):
thin bones of different people do not overlap, so it keeps the training cases' mean bone volume
rather than a majority vote. Datasets here are written in the test in the builder's layout
(dataset.json + train/<case>.npz with gt_labels)."""
import json

import numpy as np

from X2BRLib.x2b.evaluate import mean_skeleton, volume_threshold


def _rib_dataset(root, n_cases=7, shape=(24, 20, 18), seed=0):
    """Cases each holding one thin bent 'rib' (label 1, two voxels thick) a few voxels from the
    others' and a shared block (label 25, a vertebra); returns the label maps."""
    rng = np.random.default_rng(seed)
    (root / "train").mkdir(parents=True)
    cases, names = [], []
    for i in range(n_cases):
        gt = np.zeros(shape, np.uint8)
        dy, dz = rng.integers(0, 4, 2)
        x = np.arange(2, 20)
        for t in range(2):
            gt[x, 4 + dy + t + (x - 11) ** 2 // 12, 6 + dz] = 1
        gt[10:13, 14:17, 8:11] = 25
        names.append(f"case_{i:05d}.npz")
        np.savez_compressed(root / "train" / names[-1], gt_labels=gt)
        cases.append(gt)
    (root / "dataset.json").write_text(json.dumps({"splits": {"train": names, "val": [], "test": []}}))
    return cases


def test_the_vote_threshold_is_the_level_whose_volume_is_nearest_the_target():
    votes = np.random.default_rng(1).integers(0, 9, 5000)
    for target in (0.0, 37.0, 800.0, 2500.0, 4999.0):
        t = volume_threshold(votes, target)
        by_level = {level: abs(np.count_nonzero(votes >= level) - target) for level in range(1, 9)}
        assert t >= 1 and by_level[t] == min(by_level.values())


def test_the_mean_skeleton_keeps_the_cases_mean_bone_volume_where_a_majority_keeps_only_the_shared_bone(tmp_path):
    cases = _rib_dataset(tmp_path)
    skel = mean_skeleton(tmp_path)
    votes = sum((c > 0).astype(int) for c in cases)
    majority = votes * 2 > len(cases)
    assert not (majority & (np.max(cases, axis=0) == 1)).any()  # the ribs never reach a majority
    mean_volume = np.mean([np.count_nonzero(c) for c in cases])
    levels = {t: abs(np.count_nonzero(votes >= t) - mean_volume) for t in range(1, len(cases) + 1)}
    assert abs(np.count_nonzero(skel) - mean_volume) == min(levels.values())
    assert (skel == 1).any() and (skel[majority] == 25).all()


def test_every_kept_voxel_takes_the_bone_most_cases_give_it(tmp_path):
    cases = _rib_dataset(tmp_path, seed=1)
    skel = mean_skeleton(tmp_path)
    stack = np.stack(cases)
    for label in (1, 25):
        votes_for = (stack == label).sum(0)
        other = (stack == (26 - label)).sum(0)  # the other bone's votes
        kept = skel == label
        assert kept.any() and (votes_for[kept] >= other[kept]).all()


def _script(name):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _films_of_layout(prior, factor, n):
    """n cases whose ground-truth boxes are the shipped prior's bones, ``factor`` x its size,
    on a PA film: (boxes (K, 5) px, geometry, None) as scripts/build_scale_prior.py makes them."""
    from X2BRLib.geometry import ProjectionGeometry

    geom = ProjectionGeometry.chest("PA", size_px=(256, 256))
    px_per_mm = geom.magnification / np.array(geom.spacing_mm)
    c0 = np.array([(geom.width - 1) / 2.0, (geom.height - 1) / 2.0])
    boxes = []
    for lab, c, s in zip(prior["labels"], prior["centre_mm"], prior["size_mm"]):
        centre = c0 + factor * np.asarray(c) * px_per_mm
        half = factor * np.asarray(s) * px_per_mm / 2
        boxes.append([lab, *(centre - half), *(centre + half)])
    return [(np.array(boxes), geom, None)] * n


def test_a_prior_of_several_patients_weighs_each_patient_the_same_and_scales_estimates_by_its_size():
    from X2BRLib import scale

    bsp = _script("build_scale_prior")
    shipped = scale.load_prior()
    small, large = _films_of_layout(shipped, 1.0, 3), _films_of_layout(shipped, 1.2, 1)
    alone = bsp.build_prior({"small": small}, {"name": "one"})
    both = bsp.build_prior({"small": small, "large": large}, {"name": "two"})
    assert np.allclose(alone["centre_mm"], shipped["centre_mm"], atol=0.01)
    # three cases of one and one of the other still make the mean of the two patients
    assert np.allclose(both["centre_mm"], 1.1 * np.asarray(shipped["centre_mm"]), atol=0.01)
    assert np.allclose(bsp.estimate_ratios(small, alone), 1.0, atol=1e-3)
    assert np.allclose(bsp.estimate_ratios(small, both), 1.1, atol=1e-3)
    assert np.allclose(bsp.estimate_ratios(large, both), 1.1 / 1.2, atol=1e-3)
