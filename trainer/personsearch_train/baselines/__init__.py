"""Classical baselines that need no training (reference points for the synthetic sets)."""

from personsearch_train.baselines.color_histogram import ColorHistogramEmbedder, histogram_predictions

__all__ = ["ColorHistogramEmbedder", "histogram_predictions"]
