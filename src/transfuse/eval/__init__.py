"""Evaluation: metrics over tensors, a batched evaluation helper, and reports (Markdown, JSON, PNG)."""
from .adversarial import attack_budget, input_range, pgd_attack, robust_accuracy
from .evaluate import evaluate, evaluate_model
from .metrics import (
    accuracy,
    agreement,
    count_parameters,
    expected_calibration_error,
    kl_to_teacher,
    latency_ms_per_1000,
    reliability_bins,
)
from .report import markdown_table, write_report

__all__ = [
    "accuracy",
    "agreement",
    "attack_budget",
    "count_parameters",
    "evaluate",
    "evaluate_model",
    "input_range",
    "expected_calibration_error",
    "kl_to_teacher",
    "latency_ms_per_1000",
    "markdown_table",
    "pgd_attack",
    "robust_accuracy",
    "reliability_bins",
    "write_report",
]
