"""The one place that assembles assets, checks, jobs, schedules, sensors and resources.

Dagster loads the code location through ``defs`` (``@dg.definitions``): resources are built then,
from the environment of the process that loads it (VQ_LAKE, VQ_HOME, VQ_DEPLOYMENT...).
"""

import dagster as dg

from vq_assets.defs import (
    automation,
    embeddings,
    experiment,
    ingest,
    labels,
    prior,
    related,
    serving,
    sweep,
    training,
)
from vq_assets.defs.k8s import executor_for_deployment
from vq_assets.resources import resources_for_deployment


def build_definitions() -> dg.Definitions:
    """The code location, with resources read from the environment now."""
    return dg.Definitions.merge(
        ingest.defs,
        labels.defs,
        prior.defs,
        embeddings.defs,
        training.defs,
        sweep.defs,
        serving.defs,
        experiment.defs,
        related.defs,
        automation.defs,
        dg.Definitions(resources=resources_for_deployment(), executor=executor_for_deployment()),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
