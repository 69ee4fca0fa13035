"""``transfuse merge CONFIG [OUT_DIR] [k=v ...] [--check] [--allow-pickle]``: read the config, check, merge.

``OUT_DIR`` as the first word after the config (mergekit's ``mergekit-yaml CONFIG OUT_DIR`` shape) is
the same as ``output=OUT_DIR``."""
from __future__ import annotations

import gc
import json
import sys
from pathlib import Path
from typing import List


def positional_output(overrides: List[str]) -> List[str]:
    """A first word with no ``=`` is the output directory (mergekit's shape); the rest stay overrides.

    The path is quoted (a JSON string is a YAML string), so folders named ``1``, ``on`` or ``null``
    stay paths instead of becoming a number, a boolean or nothing.
    """
    if overrides and "=" not in overrides[0]:
        return [f"output={json.dumps(overrides[0])}", *overrides[1:]]
    return list(overrides)


def main(config_path: Path, overrides: List[str], *, check: bool, allow_pickle: bool) -> int:
    # numba's import and target leave ~10^5 long-lived objects: collecting while they are made,
    # and scanning them again in every later full collection, cost 0.1-0.15 s of each command
    gc.disable()
    from ..merge import kernels
    from ..merge.api import merge

    kernels.load_numba_target_without_blas()  # this process only merges: 0.16 s off every command
    gc.freeze()  # what exists now lives to the end: out of the collector's sight
    gc.enable()
    config_path = Path(config_path)
    shipped = Path(__file__).parent / "configs" / f"{config_path.name}.yaml"
    if not config_path.exists() and config_path.suffix == "" and shipped.exists():
        config_path = shipped  # a shipped example by name: `transfuse merge merge_ties ...`
    from ..merge.mergekit import read_flags

    words, flag_overrides, copy_tokenizer, notes = read_flags(list(overrides))  # mergekit-yaml's flags
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    overrides = positional_output(words) + [f"{k}={v if str(v).isdigit() or v in ('true', 'false') else json.dumps(v)}"
                                            for k, v in flag_overrides.items()]
    if not copy_tokenizer:
        overrides.append("copy_tokenizer=false")
    result = merge(config_path, overrides, check=check, allow_pickle=allow_pickle, progress=sys.stderr.isatty())
    if check:
        for line in result:
            print(f"problem: {line}")
        if result:
            print(f"{len(result)} problem(s) found; the merge would not start", file=sys.stderr)
            return 2
        print("ok: the inputs are compatible")
        return 0
    print(f"merged model written to {result}")
    return 0
