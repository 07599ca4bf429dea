"""Measure CFAM's parts (granularity decoder, hard-negative matching) on the synthetic set.

Trainings of ``cfam_synthetic_small`` that differ in one part each, evaluated once at
their end on the ``small`` preset's UFine6926-layout test split (text-to-image R@1, mAP,
mSD in percent):

=====================================  ===================================================
row                                    settings
=====================================  ===================================================
Baseline (IRRA: SDM + ID)              recipe ``irra_synthetic_small``
+ granularity decoder                  CFAM, ``matching_weight: 0``
+ hard-negative matching               CFAM, ``model.overrides.granularity_queries: 0``
CFAM (decoder + hard negatives)        the recipe
=====================================  ===================================================

UFineBench publishes no CFAM component table we could read (only its abstract is
available), so the paper column stays empty. Rows train at the recipe's full schedule by
default (``--epochs 20``), so the README's IRRA and CFAM runs can be passed in with
``--reuse irra=RUN --reuse full=RUN`` instead of being trained again; ``--epochs 4``
gives a quick table (about 50 minutes on 2 cores).
The sweep machinery (resumable rows, the table) is :mod:`ablation_sweep`.

Example:
    python benchmarks/cfam_ablation.py --data-root synthetic_small/ --out runs/cfam_ablation \\
        --reuse irra=runs/irra_small --reuse full=runs/cfam_small \\
        --table benchmarks/results/cfam_ablation_ufine6926.txt
"""

from __future__ import annotations

from ablation_sweep import AblationRow, main

ROWS = {
    "irra": AblationRow("Baseline (IRRA: SDM + ID)", recipe="irra_synthetic_small"),
    "decoder": AblationRow("+ granularity decoder", {"matching_weight": 0}),
    "matching": AblationRow("+ hard-negative matching", overrides=("model.overrides.granularity_queries=0",)),
    "full": AblationRow("CFAM (decoder + hard negatives)"),
}


if __name__ == "__main__":
    raise SystemExit(
        main(
            description=__doc__.splitlines()[0],
            rows=ROWS,
            recipe="cfam_synthetic_small",
            table_title="row",
            paper_note=(
                "paper: no component table available (UFineBench's body is not public); "
                "ours: synthetic `small`, scratch image tower, MiniLM text tower"
            ),
            default_epochs=20,
            datasets=("ufine6926",),
            columns=(("R1", "R@1"), ("mAP", "mAP"), ("mSD", "mSD")),
        )
    )
