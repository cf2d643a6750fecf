"""Benchmark: does the response study's second-MRI AUC depend on which time point's box cut the test crop?

Run: ``python benchmarks/response_boxes.py [--seed 0] [--strength 1] [--trials 10] [--epochs 150]
[--cohort DIR]``.

Issue 14 found that cutting each time point with a box fitted to *its own* GTV made the second-MRI test crops
of responders (already shrunken) rescaled and re-centred in a way that goes with the label. The study now cuts
the second MRI with the first MRI's box and slices (``later_crop="first"``). This script trains the trial
networks once (the training data are first-MRI crops, the same under both rules) and scores the same networks
on both versions of every test lesion's second-MRI crop: the first MRI's box (the rule) and a box refitted to
the second-MRI GTV (the old behaviour). A pixel baseline (L2 logistic regression on 16 x 16 block means,
:func:`adaptrt.response.chance.pixel_features`) is scored the same way. Prints per-model mean AUC over the
trials for both crops and the first MRI of the held-out lesions.

The cohort: the default simulated cohort (:class:`adaptrt.simulate.metastases.MetastasisConfig`) with
``--strength`` and ``--seed``, written to a temporary folder, or ``--cohort DIR`` (a manifest.csv there).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _auc(y: Any, p: Any) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if len(set(y.tolist())) == 2 else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="cohort seed (default 0)")
    parser.add_argument("--strength", type=float, default=1.0, help="signature strength (default 1)")
    parser.add_argument("--cohort", type=Path, default=None, help="folder with manifest.csv (else simulated)")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=150)
    args = parser.parse_args(argv)

    import numpy as np

    from adaptrt.cohort import SECOND_TIMEPOINT
    from adaptrt.io.manifest import read_manifest
    from adaptrt.response.chance import _pixel_model, pixel_features
    from adaptrt.response.engine import fit_fast
    from adaptrt.response.study import (
        _trial_data,
        _trial_seed,
        prepare_cohort,
        prepare_first,
        response_config,
    )
    from adaptrt.simulate.metastases import MetastasisConfig, write_metastasis_cohort
    from adaptrt.splits import grouped_splits

    rc = response_config("paper", models=("cam",), n_trials=args.trials, fit_final=False)
    rc = dataclasses.replace(rc, train=dataclasses.replace(rc.train, epochs=args.epochs))
    test_cfg = dataclasses.replace(rc.preprocess, angles_deg=(0.0,))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="adaptrt_boxes_") as tmp:
        if args.cohort is None:
            manifest = write_metastasis_cohort(
                Path(tmp) / "cohort",
                config=MetastasisConfig(signature_strength=args.strength),
                seed=args.seed,
            )
            what = f"default simulated cohort, seed {args.seed}, signature strength {args.strength:g}"
        else:
            manifest = args.cohort / "manifest.csv"
            what = str(manifest)
        lesions, _notes = prepare_cohort(read_manifest(manifest), rc)
        own = [
            prepare_first(
                d.lesion[SECOND_TIMEPOINT].load_image(), d.lesion[SECOND_TIMEPOINT].load_mask(), test_cfg
            )
            for d in lesions
        ]
    prep = time.perf_counter() - t0
    y = np.array([d.label for d in lesions], dtype=np.int64)
    groups = np.array([d.lesion.patient_id for d in lesions])
    splits = grouped_splits(y, groups, n_trials=rc.n_trials, test_size=rc.test_size, seed=rc.seed)
    t0 = time.perf_counter()
    nets = fit_fast(
        rc.train,
        [_trial_data(lesions, y, s) for s in splits],
        [_trial_seed(s) for s in splits],
        workers=rc.workers,
        compile=rc.compile,
    )
    train_s = time.perf_counter() - t0
    crops = {
        "mri2, first-MRI box (the rule)": [d.test_mri2 for d in lesions],
        "mri2, own box (old behaviour)": own,
        "mri1 of held-out lesions": [d.test_mri1 for d in lesions],
    }
    pix_train = pixel_features([d.test_mri1.image for d in lesions])
    rows: dict[tuple[str, str], list[float]] = {}
    for s, net in zip(splits, nets, strict=True):
        pix = _pixel_model().fit(pix_train[s.train], y[s.train])
        for name, items in crops.items():
            p_net = np.array(
                [float(net.predict_proba(items[i].image, items[i].mask_bottleneck).mean()) for i in s.test]
            )
            p_pix = pix.predict_proba(pixel_features([items[i].image for i in s.test]))[:, 1]
            rows.setdefault(("network", name), []).append(_auc(y[s.test], p_net))
            rows.setdefault(("pixels", name), []).append(_auc(y[s.test], p_pix))
    print(
        f"{what}: {len(lesions)} lesions ({int(y.sum())} responders), {len(splits)} trials, {args.epochs} epochs"
    )
    print(f"prepare {prep:.0f} s, train {train_s:.0f} s")
    for (model, name), v in rows.items():
        a = np.array(v, float)
        print(
            f"  {model:>8} | {name:<32} | mean AUC {np.nanmean(a):.3f} ± {np.nanstd(a, ddof=1):.3f} (SD over trials)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
