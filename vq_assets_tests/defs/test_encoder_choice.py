"""The `encoder` resource chooses each modality's encoder by configuration, refuses bad values
by name, and the `video_embeddings` asset says per modality what ran and whether it is a
placeholder."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from vq_assets.core.embeddings.blip import BlipEncoder
from vq_assets.core.embeddings.minilm import TextOnlyEncoder
from vq_assets.core.embeddings.paired import PairedEncoder
from vq_assets.core.embeddings.resnet import ResNetEncoder
from vq_assets.core.embeddings.vit import ViTEncoder, ensure_placeholder_vit
from vq_assets.core.lake.store import PART_FILE, Lake
from vq_assets.core.sources.simulator import simulate_local
from vq_assets.definitions import build_definitions
from vq_assets.partitions import START_DATE
from vq_assets.resources import DeviceResource, EncoderResource
from vq_assets_tests.adversarial.test_media_attacks import png_declaring
from vq_assets_tests.dagster_util import materialize_days, resources

CPU = DeviceResource(device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("models"))


# (image_encoder, text_encoder) → (image class, text class, image placeholder dir name)
CHOICES = {
    ("dinov2", "bert"): (ViTEncoder, TextOnlyEncoder, "dinov2-placeholder"),
    ("vit", "bert"): (ViTEncoder, TextOnlyEncoder, "vit-placeholder"),
    ("resnet50", "blip"): (ResNetEncoder, BlipEncoder, "resnet-placeholder"),
}


@pytest.mark.parametrize("choice", list(CHOICES))
def test_each_modality_by_configuration(choice: tuple[str, str], cache: str) -> None:
    image_cls, text_cls, dirname = CHOICES[choice]
    enc = EncoderResource(image_encoder=choice[0], text_encoder=choice[1], cache_dir=cache)
    loaded = enc.load(CPU)
    assert isinstance(loaded, PairedEncoder)
    assert type(loaded.image) is image_cls and type(loaded.text) is text_cls
    assert Path(loaded.image.source) == Path(cache) / dirname
    described = loaded.describe()
    assert described["image"] == {
        "name": dirname,
        "version": loaded.image.version,
        "placeholder": True,
    }
    assert described["text"]["placeholder"] and loaded.placeholder
    assert loaded.batch_size == 4


def test_a_configured_model_is_loaded_not_a_placeholder(cache: str, tmp_path: Path) -> None:
    saved = tmp_path / "my-dinov2"
    ViTEncoder(ensure_placeholder_vit(tmp_path / "src"), device="cpu").model.save_pretrained(saved)
    ViTEncoder(tmp_path / "src", device="cpu").processor.save_pretrained(saved)
    loaded = EncoderResource(
        image_encoder="dinov2", image_model=str(saved), text_encoder="bert", cache_dir=cache
    ).load(CPU)
    assert loaded.describe()["image"]["placeholder"] is False
    assert loaded.describe()["image"]["name"] == "my-dinov2"
    assert loaded.describe()["text"]["placeholder"] is True  # no text_model: its placeholder


def test_the_default_is_efficientnet() -> None:
    default = EncoderResource()
    assert (default.image_encoder, default.text_encoder) == ("efficientnet_lite0", "auto")
    assert default.image_model is None and default.text_model is None


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"image_encoder": "resnet"}, r"image_encoder must be one of .*: 'resnet'"),
        ({"image_encoder": "DINOv2"}, r"image_encoder must be one of .*: 'DINOv2'"),
        ({"text_encoder": "roberta"}, r"text_encoder must be one of .*: 'roberta'"),
        (
            {"image_encoder": "blip", "image_model": "facebook/dinov2-base"},
            r"'facebook/dinov2-base' .* blip_model",
        ),
        (
            {"image_encoder": "dinov2", "text_model": "roberta-base"},
            r"text_model='roberta-base' is read only by text_encoder='bert', not 'auto'",
        ),
    ],
)
def test_bad_values_are_named(settings: dict[str, str], message: str, cache: str) -> None:
    with pytest.raises(ValueError, match=message):
        EncoderResource(cache_dir=cache, **settings).load(CPU)


def test_a_simulated_day_says_each_modality(tmp_path: Path) -> None:
    """ResNet images with BERT captions, both placeholders, through the asset: the metadata
    names each modality's encoder, version and placeholder flag; a corrupt clip and a cover
    declaring a huge size get per-video statuses while the day succeeds."""
    simulate_local(tmp_path, dt.date.fromisoformat(START_DATE), 1, 4, seed=2)
    lake = Lake.local(tmp_path)
    videos = pq.read_table(f"{lake.landing_dir('videos', START_DATE)}/{PART_FILE}")
    ids = videos.column("video_id").to_pylist()
    clip = videos.column("video_uri").to_pylist()[0]
    cover = videos.column("thumbnail_uri").to_pylist()[0]
    Path(clip).write_bytes(Path(clip).read_bytes()[:300])
    Path(cover).write_bytes(png_declaring(50_000, 50_000))

    instance = dg.DagsterInstance.ephemeral()
    materialize_days(["raw_videos"], [START_DATE], tmp_path, instance)
    encoder = EncoderResource(
        image_encoder="resnet50",
        text_encoder="bert",
        cache_dir=str(tmp_path / "models"),
        frames=2,
        decode_workers=1,
    )
    result = dg.materialize(
        list(build_definitions().assets),
        selection=["video_embeddings"],
        partition_key=START_DATE,
        resources=resources(tmp_path) | {"encoder": encoder},
        instance=instance,
        run_config={"ops": {"video_embeddings": {"config": {"max_decode_error_share": 0.5}}}},
    )
    assert result.success
    meta = {
        k: v.value
        for k, v in result.get_asset_materialization_events()[0].materialization.metadata.items()
    }
    assert meta["image_encoder"] == "resnet-placeholder"
    assert meta["text_encoder"] == "bert-placeholder"
    assert meta["image_placeholder"] is True and meta["text_placeholder"] is True
    assert meta["image_encoder_version"].startswith("placeholder-seed0-")
    assert meta["text_encoder_version"].startswith("placeholder-seed0-")
    assert meta["placeholder_weights"] is True
    assert (meta["image_dim"], meta["text_dim"]) == (128, 64)

    rows = {
        r["video_id"]: r
        for r in pq.read_table(lake.asset_file("video_embeddings", START_DATE)).to_pylist()
    }
    assert rows[ids[0]]["media_status"] == "refused: over pixel limit"
    assert not rows[ids[0]]["has_image"] and rows[ids[0]]["has_text"]
    assert all(rows[v]["media_status"] == "ok" and rows[v]["has_image"] for v in ids[1:])
