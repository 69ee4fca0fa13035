"""Engine properties: streaming == in-memory, order independence, LoRA, sharded HF output, provenance."""
import hashlib
import json
import random

import pytest
import torch
from safetensors.torch import save_file

import transfuse
import transfuse.merge.engine as engine
from transfuse.merge.api import load_merge_config
from transfuse.merge.plan import make_plan

from merge_helpers import read_model, write_model

CASES = [
    ("linear", {}), ("task_arithmetic", {"scale": 0.7}), ("ties", {"density": 0.3}),
    ("ties", {"density": 0.3, "topk": "per_tensor"}), ("dare", {"density": 0.5}), ("dare", {"density": 0.5, "sign": "ties"}),
    ("breadcrumbs", {"density": 0.5, "gamma": 0.05}), ("della", {"density": 0.5, "epsilon": 0.2}),
    ("model_stock", {}), ("pcb", {"ratio": 0.2}), ("slerp", {"t": 0.4}),
]


def _cfg(family, method, params, out, order=None):
    idx = (0, 1) if method == "slerp" else (0, 1, 2)
    base = {} if method == "slerp" else {"base_model": str(family["paths"]["base"])}  # slerp's base would be its first model
    return {"method": method, **base, "parameters": params, "output": str(out),
            "models": [{"model": str(family["paths"][f"e{i}"])} for i in idx]}


@pytest.mark.parametrize("method,params", CASES, ids=[f"{m}-{i}" for i, (m, _) in enumerate(CASES)])
def test_streaming_blocks_equal_in_memory(family, monkeypatch, method, params):
    """Row blocks of 16 elements (every tensor split, per-tensor statistics by radix select) == one block."""
    whole = read_model(transfuse.merge(_cfg(family, method, params, family["root"] / "whole")))
    monkeypatch.setattr(engine, "CHUNK_ELEMS", 16)
    monkeypatch.setattr(engine, "WHOLE_ELEMS", 0)  # per-tensor statistics over blocks (radix select)
    assert len(engine.row_blocks((12, 8))) > 1
    blocks = read_model(transfuse.merge(_cfg(family, method, params, family["root"] / "blocks")))
    for k in whole:  # DARE / DELLA too: their draws are a function of each entry's index
        torch.testing.assert_close(blocks[k], whole[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["dare", "della"])
def test_random_methods_do_not_depend_on_visiting_order(family, method):
    cfg = load_merge_config(_cfg(family, method, {"density": 0.4}, family["root"] / "a"))
    outs = []
    for i, out in enumerate(["a", "b"]):
        cfg = cfg.model_copy(update={"output": str(family["root"] / out)})
        plan = make_plan(cfg, allow_pickle=False)
        if i:
            random.Random(3).shuffle(plan.tensors)
            assert [t.name for t in plan.tensors] != sorted(t.name for t in plan.tensors) or True
        outs.append(read_model(engine.execute(plan, family["root"] / out)["output"]))
    for k in outs[0]:
        assert torch.equal(outs[0][k], outs[1][k])
    # and another seed gives another result
    other = read_model(transfuse.merge(_cfg(family, method, {"density": 0.4}, family["root"] / "c"), ["seed=7"]))
    assert any(not torch.equal(other[k], outs[0][k]) for k in other)


def test_lora_adapter_merged_exactly(family, tmp_path):
    g = torch.Generator().manual_seed(5)
    A = torch.randn(2, 8, generator=g)  # (r, in)
    B = torch.randn(12, 2, generator=g)  # (out, r)
    ad = tmp_path / "adapter"
    ad.mkdir()
    save_file({"base_model.model.model.layers.0.mlp.lora_A.weight": A, "base_model.model.model.layers.0.mlp.lora_B.weight": B},
              str(ad / "adapter_model.safetensors"))
    (ad / "adapter_config.json").write_text(json.dumps({"r": 2, "lora_alpha": 8, "target_modules": ["mlp"]}))
    out = read_model(transfuse.merge({"method": "task_arithmetic", "base_model": str(family["paths"]["base"]),
                                      "models": [{"model": str(ad)}], "output": str(tmp_path / "o")}))
    base = family["base"]
    torch.testing.assert_close(out["model.layers.0.mlp.weight"], base["model.layers.0.mlp.weight"] + B @ A * 4.0)
    torch.testing.assert_close(out["model.norm.weight"], base["model.norm.weight"])
    # mixed with a full model, under TIES
    out2 = transfuse.merge({"method": "ties", "base_model": str(family["paths"]["base"]), "parameters": {"density": 0.5},
                            "models": [{"model": str(ad)}, {"model": str(family["paths"]["e0"])}], "output": str(tmp_path / "o2")})
    assert (out2 / "model.safetensors").exists()


def test_sharded_output_loads_with_from_pretrained(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False)
    torch.manual_seed(0)
    paths = []
    for i in range(3):
        m = LlamaForCausalLM(cfg).to(torch.bfloat16)
        m.save_pretrained(tmp_path / f"m{i}", max_shard_size="20KB")
        paths.append(tmp_path / f"m{i}")
    assert (paths[0] / "model.safetensors.index.json").exists()
    out = transfuse.merge({"method": "ties", "base_model": str(paths[0]), "parameters": {"density": 0.5},
                           "models": [{"model": str(p)} for p in paths[1:]], "output": str(tmp_path / "merged"),
                           "shard_size": "30KB", "out_dtype": "bfloat16"})
    assert (out / "model.safetensors.index.json").exists() and len(list(out.glob("model-*.safetensors"))) > 1
    merged = LlamaForCausalLM.from_pretrained(out)
    ids = torch.tensor([[1, 2, 3, 4]])
    assert merged(ids).logits.shape == (1, 4, 64)
    sd = read_model(out)
    assert sd["model.embed_tokens.weight"].dtype == torch.bfloat16
    # model card: method and the sha256 of every input
    card = (out / "README.md").read_text()
    assert "ties" in card
    record = json.loads((out / "transfuse_merge.json").read_text())
    for p in paths:
        files = sorted(p.glob("*.safetensors"), key=lambda f: f.name)
        per_file = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
        listing = "".join(f"{n} {d}\n" for n, d in per_file.items())
        assert hashlib.sha256(listing.encode()).hexdigest() in card, p
        assert per_file in record["input_files_sha256"].values()


def test_file_digests_are_remembered_until_the_file_changes(tmp_path, monkeypatch):
    from transfuse.merge import io

    f = tmp_path / "w.safetensors"
    f.write_bytes(b"abc" * 1000)
    true = hashlib.sha256(f.read_bytes()).hexdigest()
    assert io.file_sha256(f) == true
    cache = json.loads(io.hash_cache_path().read_text())
    cache[str(f.resolve())]["sha256"] = "remembered"
    io.hash_cache_path().write_text(json.dumps(cache))
    assert io.file_sha256(f) == "remembered"  # not read again
    f.write_bytes(b"abd" * 1000)  # changed: size/mtime/inode stamp differs
    assert io.file_sha256(f) == hashlib.sha256(f.read_bytes()).hexdigest()
    # a Hugging Face hub cache link names its blob by the file's sha256: taken from the name
    blob = tmp_path / "blobs" / ("ab" * 32)
    blob.parent.mkdir()
    blob.write_bytes(b"x")
    link = tmp_path / "snapshot.safetensors"
    link.symlink_to(blob)
    assert io.file_sha256(link) == "ab" * 32


def test_vocab_pad_and_truncate(family, tmp_path):
    bigger = dict(family["experts"][0])
    bigger["model.embed_tokens.weight"] = torch.randn(12, 8)
    bigger["lm_head.weight"] = torch.randn(12, 8)
    p = write_model(tmp_path / "big", bigger, config={"vocab_size": 12})
    cfg = {"method": "linear", "base_model": str(family["paths"]["base"]), "output": str(tmp_path / "o"),
           "models": [{"model": str(p)}, {"model": str(family["paths"]["e1"])}], "vocab_policy": "truncate"}
    out = read_model(transfuse.merge(cfg))
    ref = (bigger["model.embed_tokens.weight"][:10] + family["experts"][1]["model.embed_tokens.weight"]) / 2
    torch.testing.assert_close(out["model.embed_tokens.weight"], ref)
    smaller = dict(family["experts"][0])
    smaller["lm_head.weight"] = family["experts"][0]["lm_head.weight"][:7]
    smaller["model.embed_tokens.weight"] = family["experts"][0]["model.embed_tokens.weight"][:7]
    p2 = write_model(tmp_path / "small", smaller, config={"vocab_size": 7})
    cfg.update(models=[{"model": str(p2)}], vocab_policy="pad", output=str(tmp_path / "o2"), method="task_arithmetic")
    out2 = read_model(transfuse.merge(cfg))
    torch.testing.assert_close(out2["lm_head.weight"][:7], smaller["lm_head.weight"])
    torch.testing.assert_close(out2["lm_head.weight"][7:], family["base"]["lm_head.weight"][7:])


def test_tied_lm_head_read_from_embeddings(family, tmp_path):
    tied = {k: v for k, v in family["experts"][0].items() if k != "lm_head.weight"}
    p = write_model(tmp_path / "tied", tied, config={"tie_word_embeddings": True})
    out = read_model(transfuse.merge({"method": "linear", "base_model": str(family["paths"]["base"]), "output": str(tmp_path / "o"),
                                      "models": [{"model": str(p)}]}))
    torch.testing.assert_close(out["lm_head.weight"], tied["model.embed_tokens.weight"])


def test_per_tensor_override_by_pattern(family):
    cfg = _cfg(family, "task_arithmetic", {"scale": 1.0}, family["root"] / "ov")
    cfg["overrides"] = [{"pattern": "*.mlp.*", "parameters": {"scale": 0.0}}]
    out = read_model(transfuse.merge(cfg))
    torch.testing.assert_close(out["model.layers.0.mlp.weight"], family["base"]["model.layers.0.mlp.weight"])
    assert not torch.allclose(out["model.norm.weight"], family["base"]["model.norm.weight"])


@pytest.mark.parametrize("fail_from", [0, 1], ids=["first-write", "midway"])
def test_output_is_right_when_direct_writes_fail(tmp_path, monkeypatch, fail_from):
    """A file system that opens O_DIRECT but refuses the writes: the sink goes on buffered."""
    from transfuse.merge import io

    g = torch.Generator().manual_seed(0)
    models = {n: {"w": torch.randn(64, 64, generator=g), "b": torch.randn(37, generator=g)} for n in ("base", "e0", "e1")}
    paths = {n: write_model(tmp_path / n, t) for n, t in models.items()}

    def merge(out):
        return read_model(transfuse.merge({"method": "task_arithmetic", "base_model": str(paths["base"]), "output": str(tmp_path / out),
                                           "models": [{"model": str(paths["e0"])}, {"model": str(paths["e1"])}]}))

    ref = merge("ref")
    monkeypatch.setattr(io, "_STAGE", io._ALIGN)  # a direct flush every 4 KiB: several per file
    direct_fds, real_pwrite, calls = set(), io.os.pwrite, []
    real_init = io._DirectSink.__init__

    def init(self, path, fd):
        real_init(self, path, fd)
        direct_fds.add(self.dfd)

    def pwrite(fd, data, pos):
        if fd in direct_fds:
            calls.append(pos)
            if len(calls) > fail_from:
                raise OSError(22, "Invalid argument")
        return real_pwrite(fd, data, pos)

    monkeypatch.setattr(io._DirectSink, "__init__", init)
    monkeypatch.setattr(io.os, "pwrite", pwrite)
    out = merge("out")
    assert len(calls) == fail_from + 1  # the failing write, then buffered for the rest of the file
    for k in ref:
        assert torch.equal(out[k], ref[k])


@pytest.mark.parametrize("seed", range(4))
def test_direct_sink_frames_and_plain_writes_give_the_same_file(tmp_path, monkeypatch, seed):
    """Blocks written from frames (carry in front, whole 4 KiB blocks from the frame), plain
    appends, tiny blocks, stage overflows and one write out of order: the file holds every byte."""
    import numpy as np

    from transfuse.merge import io

    monkeypatch.setattr(io, "_STAGE", 4 * io._ALIGN)  # stage flushes happen between frames too
    rng = random.Random(seed)
    path = tmp_path / "f.bin"
    fd = io.os.open(path, io.os.O_WRONLY | io.os.O_CREAT | io.os.O_TRUNC, 0o644)
    sink = io._DirectSink.open(path, fd)
    if sink is None:
        pytest.skip("no O_DIRECT here")
    expect = bytearray()
    pieces = []
    for _ in range(40):
        data = bytes(rng.getrandbits(8) for _ in range(rng.choice([1, 7, 100, 4095, 4096, 5000, 3 * 4096 + 11, 20000])))
        pieces.append((len(expect), data))
        expect += data
    redo = pieces[rng.randrange(len(pieces) - 5)]  # written again, out of order, after the 30th piece
    for i, (pos, data) in enumerate(pieces):
        if rng.random() < 0.6:
            lead = pos % io._ALIGN
            frame = io.OutFrame(lead + len(data))
            frame.raw[:lead] = 0xEE  # the sink must put the real preceding bytes here
            frame.raw[lead : lead + len(data)] = np.frombuffer(data, np.uint8)
            sink.write_frame(frame, lead, len(data), pos)
        else:
            sink.write(memoryview(data), pos)
        if i == 30:
            sink.write(memoryview(redo[1]), redo[0])
    sink.close(len(expect))
    io.os.close(fd)
    assert path.read_bytes() == bytes(expect)


@pytest.mark.parametrize("direct", [True, False], ids=["O_DIRECT", "buffered"])
def test_layout_writer_writes_frames_at_any_offset(tmp_path, direct):
    """A safetensors file written block by block from frames (odd sizes, so no block starts on a
    4 KiB boundary), with and without O_DIRECT, reads back as the tensors written."""
    import numpy as np

    from transfuse.merge import io
    from transfuse.merge.dtypes import BF16, F32

    rng = np.random.default_rng(0)
    tensors = {"a": rng.standard_normal((3, 5)).astype(np.float32), "b": rng.standard_normal((1001, 7)).astype(np.float32),
               "c": rng.standard_normal((513,)).astype(np.float32)}
    specs = [io.OutSpec(k, v.shape, F32) for k, v in tensors.items()] + [io.OutSpec("d", (2049,), BF16)]
    d_bits = rng.integers(0, 1 << 16, 2049).astype(np.uint16)
    writer = io.LayoutWriter(tmp_path, {"model.safetensors": specs}, direct=direct)
    for name, v in tensors.items():
        rows = v.shape[0]
        for r0, r1 in [(0, rows // 3), (rows // 3, rows // 2), (rows // 2, rows)]:
            flat = v[r0:r1].reshape(-1)
            lead = writer.lead(name, r0, 4)
            frame = io.OutFrame(lead + flat.nbytes)
            frame.array(lead, flat.size, np.dtype(np.float32))[:] = flat
            writer.write_frame(name, frame, lead, flat.nbytes, r0)
    lead = writer.lead("d", 0, 2)
    frame = io.OutFrame(lead + d_bits.nbytes)
    frame.array(lead, d_bits.size, np.dtype(np.uint16))[:] = d_bits
    writer.write_frame("d", frame, lead, d_bits.nbytes, 0)
    writer.close()
    raw = (tmp_path / "model.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    for name, v in tensors.items():
        a, b = header[name]["data_offsets"]
        assert np.array_equal(np.frombuffer(raw[8 + n + a : 8 + n + b], np.float32).reshape(v.shape), v), name
    a, b = header["d"]["data_offsets"]
    assert np.array_equal(np.frombuffer(raw[8 + n + a : 8 + n + b], np.uint16), d_bits)
