"""LightningDataModules for rlvr (import name ``data_modules``)."""

from data_modules.mixture import MixtureDataModule

__all__ = ["MixtureDataModule"]
