"""Floor 0, the core: helpers every other floor may use, importing nothing of the project.

Batched model passes (:mod:`.passes`), one hook helper (:mod:`.hooks`), numerical precision (:mod:`.precision`),
memory bounds (:mod:`.memory`), timing of model passes (:mod:`.timing`), atomic file writes and hashing
(:mod:`.atomic`), the cost of a piece of work in model passes (:mod:`.cost`), registries of named classes
(:mod:`.registry`), the protocol profiles (:mod:`.profiles`), the reference CSV format (:mod:`.csvfiles`) and a
background writer (:mod:`.writer`).
"""
