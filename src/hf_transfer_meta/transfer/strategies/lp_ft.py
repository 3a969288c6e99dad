"""LP-FT (Kumar et al. 2022): a linear probe on the frozen backbone first, then fine-tuning of everything.

``lp_mode="logistic"`` fits the probe as the paper's code does (`linear_probe`: scikit-learn logistic regression on
cached features, C chosen on eval_dataset) and writes it into the head before the first step; ``lp_mode="epochs"``
trains the head alone for ``lp_epochs`` by SGD, then everything. Each stage restarts the base LR schedule, as the
paper ran them as two trainings.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from ..schedules import Phase
from .base import PlanInputs, StartInputs, Strategy, check_field

__all__ = ["LP_MODES", "lp_ft_phases", "STRATEGY"]

logger = logging.getLogger(__name__)

LP_MODES = ("epochs", "logistic")
LP_UNTIL = ("epochs", "plateau")


def lp_ft_phases(
    num_depths: int,
    lp_steps: int,
    *,
    lp_lr_multiplier: float = 1.0,
    ft_depths: Iterable[int] | None = None,
    until_plateau: bool = False,
    restart: bool = True,
) -> list[Phase]:
    """LP-FT (Kumar et al. 2022): the head alone for ``lp_steps`` (the linear probe), then full fine-tuning.

    Each stage restarts the base LR schedule by default, as the paper ran them as two trainings. With
    ``until_plateau`` the fine-tuning begins as soon as validation stops improving, ``lp_steps`` at the latest.
    """
    head = num_depths - 1
    ft = frozenset(ft_depths) if ft_depths is not None else frozenset(range(num_depths))
    phases = []
    if lp_steps > 0:
        phases.append(
            Phase(0, frozenset({head}), lr_multiplier=lp_lr_multiplier, restart=restart, name="linear_probe")
        )
    phases.append(Phase(lp_steps, ft, restart=restart, name="fine_tune", on_plateau=until_plateau and lp_steps > 0))
    return phases


def _phases(inputs: PlanInputs) -> tuple[list[Phase], str]:
    a, lm, total = inputs.args, inputs.layer_map, inputs.total_steps
    n = lm.num_depths
    if a.lp_mode == "logistic":
        return lp_ft_phases(n, 0), "LP-FT: a logistic-regression probe initialises the head, then every depth trains"
    head_lr = inputs.depth_lrs[lm.head_depth]
    lp_steps = round(a.lp_epochs * inputs.steps_per_epoch)
    phases = lp_ft_phases(
        n,
        lp_steps,
        lp_lr_multiplier=(a.lp_learning_rate / head_lr) if a.lp_learning_rate else 1.0,
        until_plateau=a.lp_until == "plateau",
        restart=a.lp_restart_schedule,
    )
    description = f"LP-FT: the head alone for {lp_steps} steps ({a.lp_epochs:g} epochs), then every depth"
    if a.lp_until == "plateau":
        description = (
            f"LP-FT: the head alone until validation stops improving (at most {lp_steps} steps, {a.lp_epochs:g} "
            "epochs), then every depth"
        )
    if lp_steps >= total:
        description += f"; the run ends at step {total}, inside the head-only stage"
        logger.warning(
            f"lp_epochs={a.lp_epochs:g} is {lp_steps} optimizer steps but the run has {total}: only the head trains. "
            "Lower lp_epochs or train longer to fine-tune the whole model."
        )
    return phases, description


def _fit_probe(start: StartInputs) -> None:
    """The LP of LP-FT by logistic regression, written into the head."""
    from .linear_probe import linear_probe

    logger.warning("LP-FT: fitting the linear probe on frozen features (train_dataset, C chosen on eval_dataset)")
    r = linear_probe(
        start.model,
        start.train_batches(),
        start.eval_batches(),
        layer_map=start.layer_map,
        Cs=start.args.lp_c_grid,
        label_names=start.label_names,
        progress=start.progress,
    )
    logger.warning(
        f"LP-FT probe: C={r.C:g}, train accuracy {r.train_accuracy:.4f}, validation accuracy {r.val_accuracy:.4f}; "
        f"{r.extract_seconds:.1f}s feature extraction + {r.seconds:.1f}s C sweep"
    )
    start.results["linear_probe"] = r


def _check(a) -> None:
    check_field(a.lp_mode is None or a.lp_mode in LP_MODES, "lp_mode", a.lp_mode, f"use one of {LP_MODES} or unset")
    check_field(a.lp_epochs > 0, "lp_epochs", a.lp_epochs, "the head-only stage must last > 0 epochs")
    lr = a.lp_learning_rate
    check_field(lr is None or lr > 0, "lp_learning_rate", lr, "it must be > 0, or unset to use learning_rate")
    check_field(a.lp_until in LP_UNTIL, "lp_until", a.lp_until, f"use one of {LP_UNTIL}")
    check_field(
        a.lp_until != "plateau" or a.lp_mode == "epochs",
        "lp_until",
        a.lp_until,
        "a plateau ends the head-only stage trained by SGD: set lp_mode='epochs' (lp_epochs is then its cap)",
    )
    grid = a.lp_c_grid
    check_field(
        grid is None or (len(grid) > 0 and all(c > 0 for c in grid)),
        "lp_c_grid",
        grid,
        "give one or more inverse regularisation strengths C > 0",
    )


def _before_training(start: StartInputs) -> None:
    if start.args.lp_mode == "logistic":
        _fit_probe(start)


STRATEGY = Strategy(
    name="lp_ft",
    title="LP-FT (linear probe, then fine-tuning)",
    paper="Kumar et al. 2022, Fine-Tuning can Distort Pretrained Features and Underperform Out-of-Distribution",
    fields=("lp_mode", "lp_epochs", "lp_learning_rate", "lp_c_grid", "lp_until", "lp_restart_schedule"),
    is_active=lambda a: a.lp_mode is not None,
    describe=lambda a: (
        f"LP-FT ({a.lp_mode} probe" + (", until a validation plateau)" if a.lp_until == "plateau" else ")")
    ),
    check=_check,
    phases=_phases,
    before_training=_before_training,
    freezes=True,
    depth_groups=lambda a: a.lp_mode == "epochs" and a.lp_learning_rate is not None,
    needs_eval_dataset=lambda a: a.lp_mode == "logistic",
)
