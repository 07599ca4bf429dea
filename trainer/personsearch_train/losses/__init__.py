"""Losses shared by the trainer's methods."""

from personsearch_train.losses.oim import OIMLoss as OIMLoss

__all__ = ["OIMLoss"]
