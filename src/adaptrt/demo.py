"""``adaptrt demo``: the main job on the embedded simulated cohort.

The demo writes a simulated cohort exactly as users' data comes (DICOM MR series + RTSTRUCT + manifest),
reads it back through the same manifest loader and checks that users' data goes through, labels every lesion's
response, preprocesses the lesions for the 2-D lesion models, and writes a run folder with a report. The study
sections (response, drift, target) are added to this run as those studies land.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .cohort import FIRST_TIMEPOINT
from .errors import InputError
from .preprocess import PART1_ANGLES, PreprocessConfig, prepare_lesion
from .report.run import RunFolder
from .simulate.phantom import PhantomConfig, write_phantom_cohort

__all__ = ["DemoConfig", "run_demo"]


@dataclass(frozen=True)
class DemoConfig:
    """Configuration of ``adaptrt demo``.

    Attributes
    ----------
    seed
        Seed of the simulated cohort and of everything random in the run.
    threshold
        Fractional shrinkage at follow-up that defines a responder (0.2 = 20 %).
    phantom
        The simulated cohort.
    preprocess
        Lesion preprocessing (Part I rotations by default).
    """

    seed: int = 0
    threshold: float = 0.2
    phantom: PhantomConfig = field(default_factory=PhantomConfig)
    preprocess: PreprocessConfig = field(default_factory=lambda: PreprocessConfig(angles_deg=PART1_ANGLES))

    def __post_init__(self) -> None:
        if not (isinstance(self.seed, int) and self.seed >= 0):
            raise ValueError(f"seed must be an int >= 0, got {self.seed}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")


def run_demo(
    out: str | Path, config: DemoConfig | None = None, *, overwrite: bool = False, progress: bool = True
) -> Path:
    """Run the demo into the run folder ``out`` and return its path."""
    from .io.manifest import check_cohort, read_manifest
    from .report.figures import lesion_gallery, volume_trajectories

    cfg = config or DemoConfig()
    command = " ".join(["adaptrt", *sys.argv[1:]]) if sys.argv and "adaptrt" in sys.argv[0] else "run_demo"
    with RunFolder(
        out, command=command, config=cfg, seed=cfg.seed, title="adaptrt demo", overwrite=overwrite
    ) as run:
        manifest = write_phantom_cohort(run.file("cohort"), config=cfg.phantom, fmt="dicom", seed=cfg.seed)
        cohort = read_manifest(manifest)
        summary = check_cohort(cohort, threshold=cfg.threshold, progress=progress)
        rows = summary.to_rows()
        run.write_csv("results/cohort_summary.csv", rows)
        run.write_json("results/cohort_summary.json", {"text": summary.to_text(), "lesions": rows})

        sec = run.report.section("Cohort")
        sec.text(
            "A simulated cohort written as DICOM MR series with one RTSTRUCT per patient and time point, then "
            "read back through the manifest loader that users' data goes through (cohort/manifest.csv)."
        )
        sec.preformatted(summary.to_text())
        sec.table(rows, caption="Lesions: GTV volumes (mm³) per time point and response label")

        # volume trajectories from the summary's rows
        tps = [t for t in summary.timepoints if any(f"volume_{t}_mm3" in r for r in rows)]
        vols = {
            f"{r['patient_id']}/{r['lesion_id']}": [float(r[f"volume_{t}_mm3"]) for t in tps] for r in rows
        }
        labels = {f"{r['patient_id']}/{r['lesion_id']}": r.get("responder") for r in rows}
        png = run.save_figure(volume_trajectories(vols, labels, tps), "volume_trajectories")
        sec.figure(
            png, caption=f"GTV volume relative to the first MRI; response = shrinkage >= {cfg.threshold:.0%}"
        )

        imgs: list[np.ndarray] = []
        masks: list[np.ndarray] = []
        titles: list[str] = []
        n_prepared = 0
        for lesion in cohort.lesions:
            tp = lesion[FIRST_TIMEPOINT]
            try:
                ls = prepare_lesion(tp.load_image(), tp.load_mask(), cfg.preprocess)
            except InputError as exc:
                sec.note(f"{lesion.key}: excluded from preprocessing ({exc.problem})")
                continue
            n_prepared += 1
            if len(imgs) < 24:
                centre = ls.slice_index[len(ls.slice_index) // 2]
                pick = np.flatnonzero(ls.slice_index == centre)
                for i in pick[:6]:
                    imgs.append(ls.image[i])
                    masks.append(ls.mask[i])
                    titles.append(f"{lesion.key} z={ls.slice_index[i]} {ls.angle_deg[i]:g}°")
        pre = run.report.section("Preprocessing for the lesion models")
        pre.text(
            f"{n_prepared} lesions cropped around the GTV (margin {cfg.preprocess.margin_mm:g} mm), resampled to "
            f"{cfg.preprocess.size}×{cfg.preprocess.size}, normalised to [0, 1] "
            f"({cfg.preprocess.normalisation}), {cfg.preprocess.n_slices} slices each, rotated by "
            f"{', '.join(f'{a:g}' for a in cfg.preprocess.angles_deg)} degrees (Part I augmentation)."
        )
        if imgs:
            png = run.save_figure(lesion_gallery(imgs, masks, titles), "lesion_slices")
            pre.figure(
                png, caption="First-MRI central slices with the GTV (red) and the rotation augmentation"
            )
    return Path(out)
