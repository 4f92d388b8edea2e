"""Floor 3, the engine: a run's context (:mod:`.context`), the factories of methods and metrics (:mod:`.factory`),
one runner per stage (:mod:`.clean`, :mod:`.maps`, :mod:`.scoring`, :mod:`.sanity`), the stores (:mod:`.store`,
:mod:`.shards`), tasks and executors (:mod:`.tasks`, :mod:`.executors`, :mod:`.sharded`), the cost model and dry run
(:mod:`.costs`), and CALM's training and evaluations (:mod:`.calm_train`, :mod:`.calm_synthetic`,
:mod:`.cue_localization`, :mod:`.remove_classify`, their protocols :mod:`.calm_protocol`). Imports the core,
models, data, methods and metrics; never the outputs or the CLI."""
