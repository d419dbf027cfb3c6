"""The Axolotl plugin: ``plugin`` (``SeaLongPlugin``: label before training,
then load the labeled rows), ``args`` (the ``sealong_*`` YAML keys), ``recipe``
(an Axolotl YAML read the plugin's way, shared with ``sealong label``),
``recipe_catalog`` (the shipped recipes), ``distributed`` (who samples what on
several ranks) and ``orpo`` (the paper's ORPO objective).

Only this package imports axolotl. It may import the core, the engines (through
``sampling.factory``) and ``data``, never ``cli``, ``demo`` or ``bench``. The
dataset-type guard ``type: axolotl_sealong.self_label`` stays at its public
path, ``axolotl_sealong/self_label.py``.
"""
