"""``sealong demo``: the whole method on the embedded model, on a CPU, offline.

``run`` builds the synthetic data and runs ``sealong iterate``'s rounds
(:mod:`axolotl_sealong.iterate`) on the shipped CPU recipe; ``report`` is the
demo's header on iterate's report. It may import ``iterate`` and the layers
below; nothing outside ``cli`` imports it.
"""
