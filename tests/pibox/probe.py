"""Raw int8 outputs of the daemon's runtime on fixed inputs; run on x86 and inside the emulated Pi.

    python probe.py MODEL_DIR INPUTS.npy OUT.npz

Standalone on purpose (copied into the Pi, run with the release venv's python): it imports only
numpy and the installed `device` package. Writes, for each of the N inputs, the output tensor
exactly as the interpreter left it (uint8/int8 codes, shape (N, K)):

    xnnpack_t1, xnnpack_t2   device.runtime.Classifier as the daemon builds it (the runtime's
                             default delegate, XNNPACK), 1 and 2 threads
    builtin_t1               the same with the built-in kernels only (no default delegate)
    builtin_conv1            on that path, the output of the model's first CONV_2D, flattened:
                             where x86 and ARM kernels first part, before later layers amplify it

and `info` (a JSON string): machine, CPU, Python, numpy, runtime versions.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import platform
import re
import sys

import numpy as np


def cpu_part() -> str:
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return "?"
    m = re.search(r"^CPU part\s*:\s*(\S+)", text, re.M) or re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return m.group(1).strip() if m else "?"


def raw_outputs(clf, inputs: np.ndarray) -> np.ndarray:
    index = int(clf.output_details["index"])
    rows = []
    for x in inputs:
        clf.set_input(x)
        clf.invoke()
        rows.append(clf.interpreter.get_tensor(index).reshape(-1).copy())
    return np.stack(rows)


def first_conv_outputs(clf, inputs: np.ndarray) -> np.ndarray:
    """The first CONV_2D's output for each input (the interpreter must preserve all tensors).
    `_get_ops_details` is the interpreter's only listing of ops in execution order."""
    ops = clf.interpreter._get_ops_details()
    index = int(next(op for op in ops if op["op_name"] == "CONV_2D")["outputs"][0])
    rows = []
    for x in inputs:
        clf.set_input(x)
        clf.invoke()
        rows.append(clf.interpreter.get_tensor(index).reshape(-1).copy())
    return np.stack(rows)


def main(argv: list[str]) -> int:
    model_dir, inputs_path, out_path = argv
    from device.runtime import Classifier, load_runtime

    inputs = np.load(inputs_path)
    rt = load_runtime()
    out = {
        f"xnnpack_t{t}": raw_outputs(Classifier.from_model_dir(model_dir, num_threads=t, runtime=rt), inputs)
        for t in (1, 2)
    }
    from ai_edge_litert.interpreter import OpResolverType

    builtin = dataclasses.replace(
        rt,
        interpreter_cls=functools.partial(
            rt.interpreter_cls,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
            experimental_preserve_all_tensors=True,
        ),
    )
    clf = Classifier.from_model_dir(model_dir, num_threads=1, runtime=builtin)
    out["builtin_t1"] = raw_outputs(clf, inputs)
    out["builtin_conv1"] = first_conv_outputs(clf, inputs)
    import cv2

    info = {
        "machine": platform.machine(),
        "cpu": cpu_part(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "runtime": f"{rt.name} {rt.version}",
    }
    np.savez(out_path, info=np.array(json.dumps(info)), **out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
