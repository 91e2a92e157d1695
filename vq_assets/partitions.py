"""Day partitions (UTC dates) and the mappings between them (DESIGN §2)."""

from __future__ import annotations

import os

import dagster as dg

from vq_assets.core.labels.windows import WINDOW_DAYS

START_DATE = os.environ.get("VQ_START_DATE", "2026-01-01")

# How far back creator history reaches; also bounds what one creator_features partition reads.
HISTORY_DAYS = int(os.environ.get("VQ_HISTORY_DAYS", "365"))

daily = dg.DailyPartitionsDefinition(start_date=START_DATE)

# A label day D exists only once day D+7 is over: its window [c, c + 7 days) is then closed.
label_days = dg.DailyPartitionsDefinition(start_date=START_DATE, end_offset=-WINDOW_DAYS)

# video_watch_daily[E] serves the videos created on E-7..E.
VIDEOS_SERVED_BY_EVENT_DAY = dg.TimeWindowPartitionMapping(start_offset=-WINDOW_DAYS)

# video_labels_7d[D] sums the partials of event days D..D+7.
EVENT_DAYS_OF_LABEL_DAY = dg.TimeWindowPartitionMapping(end_offset=WINDOW_DAYS)

# creator_features[D]: videos created up to D, labels whose window closed before D began.
HISTORY_VIDEOS = dg.TimeWindowPartitionMapping(start_offset=-HISTORY_DAYS)
CLOSED_LABEL_DAYS = dg.TimeWindowPartitionMapping(
    start_offset=-HISTORY_DAYS, end_offset=-(WINDOW_DAYS + 1)
)

# retrieval_prior[D]: neighbours are the videos created on D-7-PRIOR_CORPUS_DAYS .. D-8 (label
# windows closed before D began). A mapping is one range, so its videos and embeddings run on
# through D itself (the day's own videos); its labels stop at D-8.
PRIOR_CORPUS_DAYS = 28
PRIOR_VIDEOS = dg.TimeWindowPartitionMapping(start_offset=-(WINDOW_DAYS + PRIOR_CORPUS_DAYS))
PRIOR_LABEL_DAYS = dg.TimeWindowPartitionMapping(
    start_offset=-(WINDOW_DAYS + PRIOR_CORPUS_DAYS), end_offset=-(WINDOW_DAYS + 1)
)

# Retraining: week W (starting Sunday S) learns from the label days complete at S: D <= S - 8.
TRAIN_WEEKS = int(os.environ.get("VQ_TRAIN_WEEKS", "4"))
# end_offset=1: the week that has just started exists, since its model is trained at its start.
weekly = dg.WeeklyPartitionsDefinition(start_date=START_DATE, end_offset=1)

# training_set[W] reads days S - 7*(TRAIN_WEEKS+1) .. S - 8 (offsets count weeks).
TRAINING_DAYS = dg.TimeWindowPartitionMapping(start_offset=-(TRAIN_WEEKS + 1), end_offset=-2)

# Co-watch embeddings (DESIGN §11). cdml_model[W] learns from the co-watch of event days
# S-28..S-1 (weeks W-4..W-1), over the content of videos created S-35..S-1.
COWATCH_WEEKS = dg.TimeWindowPartitionMapping(start_offset=-4, end_offset=-1)
CDML_CONTENT_WEEKS = dg.TimeWindowPartitionMapping(start_offset=-5, end_offset=-1)
# related_videos[D]: candidates among the videos created in the 28 days up to D.
RELATED_CORPUS = dg.TimeWindowPartitionMapping(start_offset=-27)
