from pathlib import Path

import pytest

from vq_assets.core.embeddings.blip import ensure_placeholder_blip


@pytest.fixture(scope="session")
def blip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The offline placeholder BLIP checkpoint, built once for the embeddings tests."""
    return ensure_placeholder_blip(tmp_path_factory.mktemp("models") / "blip-placeholder")
