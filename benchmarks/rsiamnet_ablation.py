"""Rerun the component analysis of R-SiamNet (Han et al., ICCV 2021, Table 2) on the synthetic set.

Five trainings of ``rsiamnet_synthetic_small`` that differ only in ``method_args``, on a
shorter schedule (``--epochs``, 4 by default, with the learning-rate step at three
quarters of it), each evaluated once at its end, printed beside the paper's CUHK-SYSU
numbers:

======================================  ==================================================
Table 2 row                             method_args
======================================  ==================================================
Search path w/ IR                       paths: search, pseudo_labels: instance, no L_ins/L_int
Instance path w/ IR                     paths: instance, pseudo_labels: instance, no L_ins/L_int
R-SiamNet w/ L_ins & IR                 paths: both, pseudo_labels: instance, int_weight 0
R-SiamNet w/ L_ins & L_int & IR         paths: both, pseudo_labels: instance
R-SiamNet w/ L_ins & L_int & L_clu      paths: both, pseudo_labels: first_neighbour (full)
======================================  ==================================================

The sweep machinery (resumable rows, the table) is :mod:`ablation_sweep`.

Example:
    python benchmarks/rsiamnet_ablation.py --data-root synthetic_small/ --out runs/ablation \\
        --table benchmarks/results/rsiamnet_ablation_cuhk_sysu.txt
"""

from __future__ import annotations

from ablation_sweep import AblationRow, main

#: Table 2 of the paper (CUHK-SYSU): mAP and rank-1 in percent.
ROWS = {
    "search_ir": AblationRow(
        "Search path w/ IR",
        {"paths": "search", "pseudo_labels": "instance", "ins_weight": 0, "int_weight": 0},
        {"cuhk_sysu": (51.85, 59.69)},
    ),
    "instance_ir": AblationRow(
        "Instance path w/ IR",
        {"paths": "instance", "pseudo_labels": "instance", "ins_weight": 0, "int_weight": 0},
        {"cuhk_sysu": (63.79, 65.55)},
    ),
    "ins_ir": AblationRow(
        "R-SiamNet w/ L_ins & IR",
        {"pseudo_labels": "instance", "int_weight": 0},
        {"cuhk_sysu": (76.06, 78.21)},
    ),
    "ins_int_ir": AblationRow(
        "R-SiamNet w/ L_ins & L_int & IR", {"pseudo_labels": "instance"}, {"cuhk_sysu": (79.62, 82.17)}
    ),
    "full": AblationRow("R-SiamNet w/ L_ins & L_int & L_clu", {}, {"cuhk_sysu": (85.72, 86.86)}),
}


if __name__ == "__main__":
    raise SystemExit(
        main(
            description=__doc__.splitlines()[0],
            rows=ROWS,
            recipe="rsiamnet_synthetic_small",
            table_title="Table 2 row",
            paper_note=(
                "paper: CUHK-SYSU, ResNet-50 from ImageNet, 48 epochs; ours: synthetic `small`, scratch"
            ),
        )
    )
