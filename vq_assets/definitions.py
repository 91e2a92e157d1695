"""The one place that assembles assets, checks, jobs, schedules, sensors and resources."""

import dagster as dg

from vq_assets.defs import automation, embeddings, ingest, labels, serving, training
from vq_assets.resources import resources_for_deployment


def build_definitions() -> dg.Definitions:
    """The code location, with resources read from the environment now (VQ_LAKE, VQ_HOME...)."""
    return dg.Definitions.merge(
        ingest.defs,
        labels.defs,
        embeddings.defs,
        training.defs,
        serving.defs,
        automation.defs,
        dg.Definitions(resources=resources_for_deployment()),
    )


defs = build_definitions()
