"""CoMD rounds on a tiny random Llama teacher and two students built from its layers: the students'
judge scores rise, pools hold the prompts each still loses, and the judge is the teacher's likelihood."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "lm"))
from lm_helpers import make_llama  # noqa: E402

from transfuse.lm.models import student_from_teacher  # noqa: E402
from transfuse.online.methods.comd import judge_scores, run_comd  # noqa: E402


def _setup():
    teacher = make_llama(layers=3, seed=0, hidden=32)
    with torch.no_grad():  # a confident random teacher: its greedy answers are far likelier under it than others
        teacher.lm_head.weight.mul_(8.0)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(8, 40, (int(n),), generator=g).tolist() for n in torch.randint(2, 5, (12,), generator=g)]
    students = [student_from_teacher(teacher, [0]), student_from_teacher(teacher, [2])]
    return teacher, students, prompts


def test_judge_score_is_mean_answer_logprob_under_the_judge():
    teacher, _, prompts = _setup()
    answers = [[9, 10], [11]]
    got = judge_scores(teacher, prompts[:2], answers, pad_token_id=0, seq_len=12)
    for k, (p, a) in enumerate(zip(prompts[:2], answers)):
        ids = torch.tensor([p + a])
        logp = torch.log_softmax(teacher(input_ids=ids).logits[0].float(), -1)  # (T, V)
        want = sum(logp[len(p) - 1 + t, a[t]] for t in range(len(a))) / len(a)
        assert abs(got[k].item() - want.item()) < 1e-4


def test_comd_rounds_raise_the_students_judge_scores(tmp_path):
    teacher, students, prompts = _setup()
    start = [s.state_dict()["lm_head.weight"].clone() for s in students]
    result = run_comd(students, teacher, prompts, rounds=2, epochs_per_round=4, max_new_tokens=4, lr=1e-2,
                      output_dir=tmp_path / "comd", seed=0)
    by_student = {i: [h for h in result.history if h["student"] == i] for i in range(2)}
    for i, records in by_student.items():
        assert [h["round"] for h in records] == [0, 1, 2]
        assert records[-1]["judge_score"] > records[0]["judge_score"] + 0.05  # closer to the teacher's answers
        assert records[-1]["win_rate"] >= records[0]["win_rate"]
        # round 2 trained on every prompt plus the ones the student lost after round 1
        assert records[1]["pool"] == len(prompts) and records[2]["pool"] == len(prompts) + len(records[1]["losing"])
        assert (result.students[i].state_dict()["lm_head.weight"] - start[i]).abs().max() > 1e-4
    assert (tmp_path / "comd" / "round2" / "student1.safetensors").exists()
    # resume: every round is finished, so the students load back to the same weights with no training
    _, fresh, _ = _setup()
    again = run_comd(fresh, teacher, prompts, rounds=2, epochs_per_round=4, max_new_tokens=4, lr=1e-2,
                     output_dir=tmp_path / "comd", seed=0, resume=True)
    for a, b in zip(result.students, again.students):
        assert torch.equal(a.state_dict()["lm_head.weight"], b.state_dict()["lm_head.weight"])
    assert [h["judge_score"] for h in again.history] == [h["judge_score"] for h in result.history]
