"""Build everything a board boots, content-addressed and cached.

Each builder turns explicit inputs (source, patches, config fragment, packages) into one
artifact stored under a key derived from those inputs only, so an unchanged input set costs a
cache lookup and nothing else.
"""
