"""``type: axolotl_sealong.self_label``: the guard for datasets the plugin must label.

With the plugin loaded, these entries are labeled and replaced before Axolotl
resolves their ``type``. Without it (not listed, or it failed to import, which
Axolotl only logs) Axolotl would look this name up as a prompt strategy and
train on unlabeled questions. Both of its lookups land here and stop the run:
SFT imports this module and calls ``load``; RL imports the package and calls
the attribute ``self_label``, so the module itself is made callable.
"""

from __future__ import annotations

import sys
import types
from typing import Any, NoReturn

MESSAGE = (
    "this dataset needs `plugins: [axolotl_sealong.SeaLongPlugin]`: its type "
    "`axolotl_sealong.self_label` marks questions to self-label before training. "
    "Add the plugin to the YAML (and check that `import "
    "axolotl_sealong.integrations.axolotl.plugin` works: Axolotl only logs a "
    "plugin that fails to import)."
)


def _refuse() -> NoReturn:
    raise RuntimeError(MESSAGE)


def load(tokenizer: Any, cfg: Any, ds_cfg: Any = None, **kwargs: Any) -> NoReturn:
    """SFT prompt-strategy entry point."""
    _refuse()


class _CallableModule(types.ModuleType):
    def __call__(self, cfg: Any, **kwargs: Any) -> NoReturn:
        """RL (ORPO/DPO) strategy entry point."""
        _refuse()


sys.modules[__name__].__class__ = _CallableModule
