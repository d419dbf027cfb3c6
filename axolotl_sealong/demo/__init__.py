"""The demo: ``run`` (``sealong demo``: label, train, evaluate the embedded
model), ``iterate`` (rounds of it, ``sealong iterate``) and ``report`` (their
tables and plots).

It drives the core, the Axolotl plugin and lm-eval; nothing outside ``cli``
imports it.
"""
