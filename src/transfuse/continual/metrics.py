"""Continual-learning metrics: pure functions of the accuracy matrix R and its learning curves.

R is (T, T): R[i][j] is the accuracy on task j after training on tasks 0..i (0-indexed here; the
papers count from 1). b is (T,): each task's accuracy under the model before any training (the
GEM baseline of FWT). A learning curve is the accuracy on task i after each epoch of training on it.

Formulas (T tasks, 0-indexed), and where codebases disagree:
- ``acc``          ACC = mean_j R[T-1][j]                                      (GEM, Lopez-Paz & Ranzato 2017)
- ``bwt``          BWT = sum_{j<T-1} (R[T-1][j] - R[j][j]) / (T-1)             (GEM; Avalanche's StreamForgetting
                   averages over the experiences trained before the last one, so its BWT = -forgetting is the
                   same number). Some codebases divide by T (BeGin's AF, SAPT#8): ``denominator="T"``.
- ``fwt``          FWT = sum_{j>=1} (R[j-1][j] - b[j]) / (T-1)                  (GEM; Avalanche's forward_transfer).
                   BeGin's docs divide by T: ``denominator="T"``.
- ``forgetting``   f_j = max_{j<=l<T-1} R[l][j] - R[T-1][j] ("max", Chaudhry et al. 2018) or R[j][j] - R[T-1][j]
                   ("last", Avalanche's forgetting), averaged over j < T-1; the max runs over rows after task j
                   was learned (rows before it measure an untrained task). ``denominator="T"`` counts the last
                   task's forgetting of 0 in the mean, as RaptorMai/online-continual-learning did before PR#23.
- ``libero``       FWT_k = mean_e curve_k[e]; NBT_k = mean_{tau>k} (R[k][k] - R[tau][k]) (over k < T-1);
                   AUC_k = (R[k][k] + sum_{tau>k} R[tau][k]) / (T - k); each averaged over k (LIBERO, Liu et al. 2023).
- ``performance_maintenance``  PM = mean_{j<T-1} mean_{i>j} (R[i][j] - R[j][j])    (l2metrics, "mrlep": every
                   later evaluation against the evaluation right after training on j).
- ``transfer_ratios``  l2metrics' forward / backward transfer between task pairs from the evaluations just
                   before and after training task i: forward for tasks k > i not trained yet, backward for k < i;
                   ratio tp2 / tp1 (pairs with tp1 = 0 skipped) and contrast (tp2 - tp1) / (tp1 + tp2); the row
                   before task 0 is b. Each averaged over the valid pairs.
- ``ste_relative`` R[j][j] / STE_j and R[T-1][j] / STE_j averaged over j: the run against single-task experts
                   (one model trained on task j alone); and l2metrics' STE relative performance, the ratio of
                   areas under the learning curves (trimmed to the shorter).
- ``sample_efficiency``  mean_j (sat_j / ste_sat_j) * (ste_n_j / n_j), sat = the curve's maximum, n = epochs to
                   reach it (l2metrics' sample efficiency, with the raw curve in place of its smoothed blocks).
"""
from __future__ import annotations

from typing import Dict, List, Literal, Optional, Sequence

import numpy as np

Denominator = Literal["T-1", "T"]


def _matrix(R) -> np.ndarray:
    R = np.asarray(R, dtype=np.float64)
    if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] < 1:
        raise ValueError(f"the accuracy matrix must be square (T, T); got shape {R.shape}")
    return R


def _divide(total: float, count: int, T: int, denominator: Denominator) -> float:
    n = count if denominator == "T-1" else T
    return float(total / n) if n else float("nan")


def acc(R) -> float:
    """ACC: mean accuracy over all tasks after the last one (GEM)."""
    R = _matrix(R)
    return float(R[-1].mean())


def bwt(R, *, denominator: Denominator = "T-1") -> float:
    """BWT: mean change on earlier tasks between learning them and the end (GEM); negative = forgetting."""
    R = _matrix(R)
    T = len(R)
    total = sum(R[T - 1, j] - R[j, j] for j in range(T - 1))
    return _divide(total, T - 1, T, denominator)


def fwt(R, b, *, denominator: Denominator = "T-1") -> float:
    """FWT: mean accuracy on each task just before learning it, above the untrained model's b (GEM)."""
    R = _matrix(R)
    b = np.asarray(b, dtype=np.float64)
    T = len(R)
    if b.shape != (T,):
        raise ValueError(f"b must hold one accuracy per task ({T}); got shape {b.shape}")
    total = sum(R[j - 1, j] - b[j] for j in range(1, T))
    return _divide(total, T - 1, T, denominator)


def forgetting(R, *, kind: Literal["max", "last"] = "max", denominator: Denominator = "T-1") -> float:
    """Mean forgetting of the tasks before the last: best (max) or just-learned (last) accuracy minus final."""
    R = _matrix(R)
    T = len(R)
    total = 0.0
    for j in range(T - 1):
        ref = R[j : T - 1, j].max() if kind == "max" else R[j, j]
        total += ref - R[T - 1, j]
    return _divide(total, T - 1, T, denominator)


def libero(R, curves: Optional[Sequence[Sequence[float]]] = None) -> Dict[str, float]:
    """LIBERO's FWT (mean over each task's training checkpoints; R[k][k] when no curves), NBT and AUC."""
    R = _matrix(R)
    T = len(R)
    if curves is None:
        curves = [[R[k, k]] for k in range(T)]
    if len(curves) != T:
        raise ValueError(f"one learning curve per task is needed ({T}); got {len(curves)}")
    fwt_k = [float(np.mean(c)) for c in curves]
    nbt_k = [float(np.mean([R[k, k] - R[tau, k] for tau in range(k + 1, T)])) for k in range(T - 1)]
    auc_k = [float((R[k, k] + R[k + 1 :, k].sum()) / (T - k)) for k in range(T)]
    return {
        "fwt": float(np.mean(fwt_k)),
        "nbt": float(np.mean(nbt_k)) if nbt_k else float("nan"),
        "auc": float(np.mean(auc_k)),
    }


def performance_maintenance(R) -> float:
    """l2metrics' performance maintenance (mrlep): later evaluations minus the one right after learning."""
    R = _matrix(R)
    T = len(R)
    per_task = [np.mean([R[i, j] - R[j, j] for i in range(j + 1, T)]) for j in range(T - 1)]
    return float(np.mean(per_task)) if per_task else float("nan")


def transfer_ratios(R, b) -> Dict[str, float]:
    """l2metrics' forward / backward transfer (ratio and contrast) over task pairs."""
    R = _matrix(R)
    T = len(R)
    before = np.vstack([np.asarray(b, dtype=np.float64)[None, :], R[:-1]])  # (T, T): row i = evaluation before task i
    out: Dict[str, List[float]] = {k: [] for k in ("ft_ratio", "ft_contrast", "bt_ratio", "bt_contrast")}
    for i in range(T):
        for k in range(T):
            if k == i:
                continue
            tp1, tp2 = before[i, k], R[i, k]
            side = "ft" if k > i else "bt"
            if tp1 != 0:
                out[f"{side}_ratio"].append(tp2 / tp1)
            if tp1 + tp2 != 0:
                out[f"{side}_contrast"].append((tp2 - tp1) / (tp1 + tp2))
    return {k: float(np.mean(v)) if v else float("nan") for k, v in out.items()}


def ste_relative(R, ste, curves=None, ste_curves=None) -> Dict[str, float]:
    """The run against single-task experts: just-learned and final accuracy ratios, and learning-curve areas."""
    R = _matrix(R)
    ste = np.asarray(ste, dtype=np.float64)
    out = {
        "learned_over_ste": float(np.mean(np.diag(R) / ste)),
        "final_over_ste": float(np.mean(R[-1] / ste)),
    }
    if curves is not None and ste_curves is not None:
        ratios = []
        for c, s in zip(curves, ste_curves):
            n = min(len(c), len(s))
            ratios.append(float(np.sum(c[:n]) / np.sum(s[:n])))
        out["curve_area_over_ste"] = float(np.mean(ratios))
    return out


def _saturation(curve: Sequence[float]) -> tuple[float, int]:
    curve = np.asarray(curve, dtype=np.float64)
    return float(curve.max()), int(np.argmax(curve)) + 1  # (value, epochs to reach it)


def sample_efficiency(curves, ste_curves) -> float:
    """l2metrics' sample efficiency against single-task experts' learning curves."""
    values = []
    for c, s in zip(curves, ste_curves):
        sat, n = _saturation(c)
        ste_sat, ste_n = _saturation(s)
        values.append((sat / ste_sat) * (ste_n / n))
    return float(np.mean(values))


def all_metrics(R, b, *, curves=None, ste=None, ste_curves=None, denominator: Denominator = "T-1") -> Dict[str, float]:
    """Every metric above in one flat dict (the run's metrics.json)."""
    out = {
        "acc": acc(R),
        "bwt": bwt(R, denominator=denominator),
        "fwt": fwt(R, b, denominator=denominator),
        "forgetting_max": forgetting(R, kind="max", denominator=denominator),
        "forgetting_last": forgetting(R, kind="last", denominator=denominator),
        "performance_maintenance": performance_maintenance(R),
    }
    out.update({f"libero_{k}": v for k, v in libero(R, curves).items()})
    out.update(transfer_ratios(R, b))
    if ste is not None:
        out.update({f"ste_{k}": v for k, v in ste_relative(R, ste, curves, ste_curves).items()})
        if curves is not None and ste_curves is not None:
            out["sample_efficiency"] = sample_efficiency(curves, ste_curves)
    return out
