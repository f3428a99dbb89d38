"""Exportable model families, one module each; importing a module registers its models.

``impasto.export.registry`` imports the built-in ones on first use. A new family (SPADE,
SketchyGAN, ...) is one more module here that calls :func:`impasto.export.registry.register`
for each of its models, added to the registry's ``_FAMILY_MODULES``.
"""
