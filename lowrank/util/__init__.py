"""Leaf helpers every other room uses and none of them imports anything of lowrank above
this folder: the three forms of model input (:mod:`.inputs`), eval-mode passes (:mod:`.modes`),
calibration batches (:mod:`.batches`), the on-disk cache (:mod:`.cache`) and registries whose
entries are files (:mod:`.plugins`)."""
