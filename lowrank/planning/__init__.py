"""From a model's priced layers to a plan and back to a model: the layer table that holds a
model's layers, prices and bases (:mod:`.table`), the bridge to a solver problem
(:mod:`.problem`), the plan bound to layer names (:mod:`.plan`), the rebuild at chosen
ranks (:mod:`.rebuild`) and the table in words (:mod:`.summary`)."""
