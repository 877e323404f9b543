"""What a model has: one hooked pass records every layer with weights (:mod:`.record`),
selection says which can be factorised and why the others stay dense (:mod:`.inventory`),
and the graph says how data flows between them (:mod:`.graph`)."""
