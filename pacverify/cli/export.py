"""``pacverify export``: a saved student (``student.pt``) to ONNX, checked against onnxruntime."""
from __future__ import annotations

import argparse
import json

from pacverify.data import check_points, load_array
from pacverify.models import load_student
from pacverify.onnx_io.export import export_onnx

HELP = "export a distilled student (student.pt) to ONNX and check onnxruntime against torch"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help=HELP, description=HELP[0].upper() + HELP[1:] + ".")
    p.add_argument("student", metavar="STUDENT.pt", help="a student file written by pacverify distill")
    p.add_argument("--out", required=True, metavar="FILE.onnx", help="where to write the ONNX model")
    p.add_argument("--opset", default="17", help="ONNX opset, >= 13 (default 17)")
    p.add_argument("--points", metavar="FILE", help="sample inputs (.npy .npz .csv .pt) to compare on as well")
    p.add_argument("--seed", default="0", help="seed of the random comparison inputs")
    p.add_argument("--json", action="store_true", help="print the export report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    student = load_student(args.student)
    sample = None
    if args.points:
        sample = check_points(load_array(args.points), name=args.points, input_shape=student.input_shape)
    report = export_onnx(student, args.out, student.input_shape, opset=args.opset, sample=sample, seed=args.seed)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
        return 0
    sample_text = "" if report.max_abs_diff_sample is None else \
        f", {report.max_abs_diff_sample:.2g} on {report.n_sample} sample points"
    print(f"wrote {report.path} (opset {report.opset}, ops {', '.join(report.ops)})\n"
          f"max |onnxruntime - torch|: {report.max_abs_diff_random:.2g} on {report.n_random} random inputs{sample_text}")
    return 0
