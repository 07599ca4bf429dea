"""What sentence-search scores mean: the same gallery scored with uninformative queries.

Run after saving sentence-search predictions with ``personsearch eval --dataset
{prw_tbps,cuhk_sysu_tbps} ... --save-predictions P.npz``::

    python benchmarks/tbps_controls.py --dataset prw_tbps --root data/synth/PRW --predictions P.npz

The saved gallery (the detector's boxes and scores, the crop encoder's embeddings) is kept
and only the query embeddings are replaced, then scored with the same protocol:

* **model**: the saved sentence embeddings (the reported figure);
* **shuffled sentences**: each query row gets the embedding of a sentence describing
  another query person (a random permutation over persons): a description of somebody
  else, so what remains is what the model finds without the right words;
* **random queries** (chance): random unit vectors, mean over ``--seeds`` draws.

Both controls use the gallery's confidence weighting, so their scores also hold what the
detector's scores alone would find. Prints one table.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
from personsearch_train.data.registry import load_split
from personsearch_train.data.tbps import TBPS_DATASETS, load_sentence_queries, sentence_query_split
from personsearch_train.evaluation.person_search import evaluate_search
from personsearch_train.evaluation.predictions import SearchPredictions


def _score(split, predictions: SearchPredictions, queries: np.ndarray) -> tuple[float, float, float]:  # noqa: ANN001
    result = evaluate_search(
        split, dataclasses.replace(predictions, query_embeddings=queries.astype(np.float32))
    )
    return 100 * result.mean_ap, 100 * result.top(1), 100 * result.top(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, choices=sorted(TBPS_DATASETS))
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--predictions", type=Path, required=True, help="saved with eval --save-predictions")
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()

    scenes = TBPS_DATASETS[args.dataset]
    split = load_split(scenes, args.root, "test")
    queries = load_sentence_queries(args.dataset, args.root, split)
    expanded = sentence_query_split(split, queries)
    predictions = SearchPredictions.load(args.predictions)
    predictions.check_against(expanded)
    saved = predictions.query_embeddings

    rows = [("model (saved sentence embeddings)", *_score(expanded, predictions, saved))]
    persons = np.unique(queries.query_index)
    shuffled, random = [], []
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        # A derangement of the persons: nobody keeps their own sentences.
        while True:
            permuted = rng.permutation(persons)
            if not np.any(permuted == persons):
                break
        other = dict(zip(persons.tolist(), permuted.tolist(), strict=True))
        first_row = {int(p): int(np.flatnonzero(queries.query_index == p)[0]) for p in persons}
        rows_of_other = [first_row[other[int(p)]] for p in queries.query_index]
        shuffled.append(_score(expanded, predictions, saved[rows_of_other]))
        noise = rng.standard_normal(saved.shape)
        random.append(_score(expanded, predictions, noise / np.linalg.norm(noise, axis=1, keepdims=True)))
    rows.append((f"shuffled sentences (mean of {args.seeds})", *np.mean(shuffled, axis=0)))
    rows.append((f"random queries, chance (mean of {args.seeds})", *np.mean(random, axis=0)))

    print(f"$ python benchmarks/tbps_controls.py --dataset {args.dataset} --root {args.root} ...")
    print(f"{args.dataset}: {queries.num_sentences} sentences for {len(persons)} query persons; values in %")
    print()
    print("| queries | mAP | top-1 | top-10 |")
    print("|---|---:|---:|---:|")
    for name, m, t1, t10 in rows:
        print(f"| {name} | {m:.2f} | {t1:.2f} | {t10:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
