"""The accuracy-matrix metrics against a matrix computed by hand."""
import math

import pytest

from transfuse.continual import metrics as M

R = [[0.9, 0.1, 0.0], [0.6, 0.8, 0.2], [0.5, 0.7, 0.9]]
B = [0.1, 0.1, 0.1]


def test_gem_metrics_by_hand():
    assert M.acc(R) == pytest.approx((0.5 + 0.7 + 0.9) / 3)
    assert M.bwt(R) == pytest.approx(((0.5 - 0.9) + (0.7 - 0.8)) / 2)
    assert M.bwt(R, denominator="T") == pytest.approx(((0.5 - 0.9) + (0.7 - 0.8)) / 3)
    assert M.fwt(R, B) == pytest.approx(((0.1 - 0.1) + (0.2 - 0.1)) / 2)
    assert M.forgetting(R, kind="max") == pytest.approx(((0.9 - 0.5) + (0.8 - 0.7)) / 2)
    assert M.forgetting(R, kind="last") == pytest.approx(-M.bwt(R))


def test_max_and_last_forgetting_differ_when_a_task_recovers():
    R2 = [[0.9, 0.0, 0.0, 0.0], [0.5, 0.9, 0.0, 0.0], [0.95, 0.9, 0.9, 0.0], [0.7, 0.9, 0.9, 0.9]]
    assert M.forgetting(R2, kind="max") == pytest.approx((0.25 + 0.0 + 0.0) / 3)
    assert M.forgetting(R2, kind="last") == pytest.approx((0.2 + 0.0 + 0.0) / 3)


def test_libero_and_l2metrics_by_hand():
    lib = M.libero(R, curves=[[0.5, 0.9], [0.6, 0.8], [0.9]])
    assert lib["fwt"] == pytest.approx((0.7 + 0.7 + 0.9) / 3)
    assert lib["nbt"] == pytest.approx((((0.9 - 0.6) + (0.9 - 0.5)) / 2 + (0.8 - 0.7)) / 2)
    assert lib["auc"] == pytest.approx(((0.9 + 0.6 + 0.5) / 3 + (0.8 + 0.7) / 2 + 0.9) / 3)
    assert M.performance_maintenance(R) == pytest.approx((((0.6 - 0.9) + (0.5 - 0.9)) / 2 + (0.7 - 0.8)) / 2)
    t = M.transfer_ratios(R, B)
    # forward pairs (i, k>i): (0,1) 0.1/0.1, (0,2) 0.0/0.1, (1,2) 0.2/0.0 skipped
    assert t["ft_ratio"] == pytest.approx((1.0 + 0.0) / 2)
    # backward pairs (i, k<i): (1,0) 0.6/0.9, (2,0) 0.5/0.6, (2,1) 0.7/0.8
    assert t["bt_ratio"] == pytest.approx((0.6 / 0.9 + 0.5 / 0.6 + 0.7 / 0.8) / 3)
    assert M.sample_efficiency([[0.5, 0.8]], [[0.8, 0.8]]) == pytest.approx(1.0 * (1 / 2))
    assert math.isclose(M.ste_relative(R, [0.9, 0.8, 0.9])["learned_over_ste"], 1.0)


def test_a_non_square_matrix_is_refused():
    with pytest.raises(ValueError):
        M.acc([[0.1, 0.2]])


def _avalanche_stream_metrics(R, b):
    """Avalanche's StreamForgetting / StreamBWT / StreamForwardTransfer bookkeeping, replayed on R.

    Written from avalanche/evaluation/metrics/forgetting_bwt.py and forward_transfer.py (ContinualAI/
    avalanche, read at commit eb075be): after training experience i the whole stream is evaluated;
    the experience just trained sets ``initial``, the others set ``last``; ``last`` is reset before each
    evaluation, so at the end the stream mean runs over the experiences trained before the last one.
    Forward transfer: ``previous`` = accuracy on k evaluated after training k-1, ``initial`` = at random init.
    """
    T = len(R)
    initial, last = {}, {}
    for i in range(T):
        last = {}  # before_eval: reset_last
        for j in range(T):
            if j == i:
                initial[j] = R[i][j]
            else:
                last[j] = R[i][j]
    forgetting = [initial[k] - last[k] for k in last if k in initial]
    stream_forgetting = sum(forgetting) / len(forgetting)
    previous = {k: R[k - 1][k] for k in range(1, T)}
    stream_fwt = sum(previous[k] - b[k] for k in previous) / len(previous)
    return stream_forgetting, -stream_forgetting, stream_fwt


@pytest.mark.parametrize("matrix", [R, [[0.9, 0.0, 0.0, 0.0], [0.5, 0.9, 0.0, 0.0], [0.95, 0.9, 0.9, 0.0], [0.7, 0.9, 0.8, 0.9]]])
def test_avalanche_stream_metrics_equal_ours(matrix):
    b = [0.1] * len(matrix)
    forgetting, bwt, fwt = _avalanche_stream_metrics(matrix, b)
    assert M.forgetting(matrix, kind="last") == pytest.approx(forgetting)
    assert M.bwt(matrix) == pytest.approx(bwt)
    assert M.fwt(matrix, b) == pytest.approx(fwt)
