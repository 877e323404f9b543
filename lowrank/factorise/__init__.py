"""Each layer as a factorisation: its SVD in the basis in use (:mod:`.basis`), the masked
view a network loss differentiates (:mod:`.masked`), and surgery that puts factorised
layers in a copy of the model (:mod:`.surgery`)."""
