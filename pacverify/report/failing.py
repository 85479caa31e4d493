"""The report's "Failing points" section: the sample points that fail, counted by kind, with up to
:data:`MAX_EXAMPLES` shown.

Ball mode: points the student verification falsified, left unknown, or where the student disagrees with the teacher
(``points.npz["status"]``), and the teacher counterexamples found in claimed balls (``teacher_cex_delta``,
``teacher_cex_delta_t``); the student's counterexamples are ``student_cex``. Mass mode: points with u_i < l_i (a teacher
counterexample closer than the proven lower radius, ``upper_cex``). An example with a counterexample shows the point,
the counterexample and their difference — side by side as images for image inputs (points of shape (s, H, W) or
(s, C, H, W)), as a table of the features that moved most otherwise; one without (unknown, disagree) shows the
point's labels and radius. Rendering only: the arrays are the certificate's.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pacverify.certificate.io import Certificate, status_names
from pacverify.report import plots
from pacverify.report.blocks import Block, Figure, Section, Table, Text, fmt
from pacverify.report.tables import norm_name

MAX_EXAMPLES = 12
TOP_FEATURES = 8


@dataclass(frozen=True)
class Kind:
    """One kind of failure: its name, what it means, and its sample points with their counterexamples (a row of
    ``cex`` per entry of ``indices``; NaN rows where none is recorded; ``cex`` None when the kind has none)."""

    name: str
    meaning: str
    indices: np.ndarray
    cex: np.ndarray | None
    cex_name: str = "counterexample"


def _with_cex(indices: np.ndarray, cex_index: np.ndarray | None, cex: np.ndarray | None, dim: int) -> np.ndarray:
    """The counterexample of each point in ``indices`` (flat, (k, dim)); NaN rows where none is recorded."""
    out = np.full((len(indices), dim), np.nan)
    if cex_index is None or cex is None or not len(cex_index):
        return out
    row = {int(i): r for r, i in enumerate(np.asarray(cex_index))}
    flat = np.asarray(cex, dtype=np.float64).reshape(len(cex), -1)
    for k, i in enumerate(indices):
        if int(i) in row and flat.shape[1] == dim:
            out[k] = flat[row[int(i)]]
    return out


def ball_kinds(cert: Certificate) -> list[Kind]:
    """The kinds of failure of a ball-mode certificate, most serious first (absent arrays give no kind)."""
    a = cert.arrays
    dim = int(np.prod(a["points"].shape[1:]))
    kinds = []
    for key, name, within in (("teacher_cex_delta", "teacher counterexample (δ)", "3δ"),
                              ("teacher_cex_delta_t", "teacher counterexample (δ_T)", "3δ_T")):
        claimed = (key == "teacher_cex_delta" or cert.record.relaxation.delta_T > 0  # no δ_T balls otherwise
                   or len(a.get(f"{key}_index", ())) > 0)
        if f"{key}_index" in a and key in a and claimed:
            idx = np.asarray(a[f"{key}_index"], dtype=int)
            kinds.append(Kind(name, f"the teacher changes class within {within} of a required point (a confirmed "
                                    "counterexample): it refutes the claim where the certificate makes one, and "
                                    "shows the transfer from student to teacher failing there otherwise",
                              idx, np.asarray(a[key], dtype=np.float64).reshape(len(idx), dim),
                              "teacher counterexample"))
    if "status" in a:
        names = status_names(a["status"])
        for name, meaning in (("falsified", "the student changes class within 3δ of the point"),
                              ("disagree", "the student's class differs from the teacher's at the point"),
                              ("unknown", "neither proven nor falsified within the time budget")):
            idx = np.nonzero(names == name)[0]
            cex = _with_cex(idx, a.get("student_cex_index"), a.get("student_cex"), dim) if name == "falsified" \
                else None
            kinds.append(Kind(name, meaning, idx, cex, "student counterexample"))
    return kinds


def mass_kinds(cert: Certificate) -> list[Kind]:
    """Mass mode: the points with u_i < l_i and the counterexamples behind their u_i."""
    a = cert.arrays
    if "lower" not in a or "upper" not in a:
        return []
    dim = int(np.prod(a["points"].shape[1:]))
    idx = np.nonzero(np.asarray(a["upper"]) < np.asarray(a["lower"]))[0]
    return [Kind("u_i < l_i", "a confirmed teacher counterexample closer than the proven lower radius: the oracle is "
                 "wrong there", idx, _with_cex(idx, a.get("upper_cex_index"), a.get("upper_cex"), dim),
                 "teacher counterexample")]


def _pick(kinds: list[Kind], limit: int) -> list[tuple[Kind, int]]:
    """Up to ``limit`` (kind, position) pairs, taken from the kinds in turn so that each kind is shown."""
    picked: list[tuple[Kind, int]] = []
    depth = 0
    while len(picked) < limit and any(depth < len(k.indices) for k in kinds):
        for kind in kinds:
            if depth < len(kind.indices) and len(picked) < limit:
                picked.append((kind, depth))
        depth += 1
    return picked


def _value(array: np.ndarray | None, i: int) -> str:
    if array is None or i >= len(array):
        return "–"
    value = array[i].item() if hasattr(array[i], "item") else array[i]
    if isinstance(value, float) and np.isnan(value):
        return "–"
    return fmt(value)


def _info(cert: Certificate, i: int) -> list[tuple[str, str]]:
    """What the certificate records at sample point i: (name, value) pairs."""
    a = cert.arrays
    out = [("teacher class", _value(a.get("teacher_label"), i)),
           ("teacher confidence", _value(a.get("teacher_confidence"), i))]
    if "student_label" in a:
        out.append(("student class", _value(a["student_label"], i)))
    if cert.mass:
        out += [("lower radius l_i", _value(a.get("lower"), i)), ("attack radius u_i", _value(a.get("upper"), i))]
    else:
        out.append(("certified radius r_i", _value(a.get("certified_radius"), i)))
    return out


def image_layout(shape: tuple[int, ...]) -> str | None:
    """How a point of this shape is shown as an image: "hw", "chw", "hwc", or None (not an image)."""
    if len(shape) == 2:
        return "hw"
    if len(shape) == 3:
        if shape[0] in (1, 3) or shape[-1] not in (1, 3):
            return "chw"
        return "hwc"
    return None


def as_image(x: np.ndarray, layout: str, channel: int | None = None) -> np.ndarray:
    """A point as (H, W) or (H, W, 3); with other than 1 or 3 channels, the given ``channel`` alone."""
    x = np.asarray(x, dtype=np.float64)
    if layout == "hw":
        return x
    chw = x if layout == "chw" else np.moveaxis(x, -1, 0)
    if chw.shape[0] == 1:
        return chw[0]
    if chw.shape[0] == 3:
        return np.moveaxis(chw, 0, -1)
    return chw[channel or 0]


def _distance(diff: np.ndarray, norm: str) -> float:
    return float(np.abs(diff).max() if norm == "inf" else np.linalg.norm(diff))


def _image_example(cert: Certificate, kind: Kind, i: int, cex: np.ndarray, layout: str, number: int,
                   distance: str) -> Figure:
    """The point, its counterexample and their difference as one PNG."""
    shape = cert.arrays["points"].shape[1:]
    point = np.asarray(cert.arrays["points"][i], dtype=np.float64)
    other = cex.reshape(shape)
    channels = shape[0] if layout == "chw" else shape[-1] if layout == "hwc" else 1
    channel, which = None, ""
    if channels not in (1, 3):
        change = np.abs(other - point)
        change = change if layout == "chw" else np.moveaxis(change, -1, 0)
        channel = int(change.reshape(channels, -1).sum(1).argmax())
        which = f"; channel {channel} of {channels}, the one that changed most"
    png = plots.counterexample_image(as_image(point, layout, channel), as_image(other, layout, channel),
                                     point_title=f"point x (#{i})", cex_title="counterexample x′",
                                     diff_title="change x′ − x")
    return Figure(f"failing_{number:02d}.png", f"Sample point {i} — {kind.name}: the point x, the {kind.cex_name} x′ "
                  f"and x′ − x (‖x′ − x‖ = {distance}{which}).", png)


def _feature_rows(point: np.ndarray, cex: np.ndarray, i: int, kind: Kind) -> list[tuple[str, ...]]:
    """The features that moved most from the point to its counterexample (all of them when there are few)."""
    change = cex - point
    top = np.argsort(-np.abs(change), kind="stable")[:min(TOP_FEATURES, point.size)]
    moved = int((change != 0).sum())
    rows: list[tuple[str, ...]] = []
    for n, j in enumerate(top):
        first = (str(i), kind.name, f"{moved} of {point.size}") if n == 0 else ("", "", "")
        rows.append((*first, str(int(j)), fmt(float(point[j])), fmt(float(cex[j])), fmt(float(change[j]))))
    return rows


def failing_section(cert: Certificate) -> Section:
    """The "Failing points" section of the report (mass or ball mode)."""
    title, anchor = "Failing points", "failing-points"
    if "points" not in cert.arrays:
        return Section(title, anchor, [Text("The per-point arrays (points.npz) were not loaded.")])
    kinds = mass_kinds(cert) if cert.mass else ball_kinds(cert)
    if not any(len(k.indices) for k in kinds):
        nothing = ("Nothing fails: no sample point has a teacher counterexample closer than its proven lower radius "
                   "(u_i < l_i)." if cert.mass else
                   "Nothing fails: no required point is falsified, unknown or disagreeing, and the teacher attack "
                   "found no counterexample in a claimed ball.")
        return Section(title, anchor, [Text(nothing)])
    total = sum(len(k.indices) for k in kinds)
    blocks: list[Block] = [Table(("kind", "points", "meaning"), [(k.name, str(len(k.indices)), k.meaning)
                                                                  for k in kinds], numeric=(1,))]
    picked = _pick(kinds, MAX_EXAMPLES)
    norm = cert.record.pac.norm
    points = cert.arrays["points"]
    layout = image_layout(tuple(points.shape[1:]))
    examples: list[tuple[str, ...]] = []
    features: list[tuple[str, ...]] = []
    groups: list[int] = []
    images: list[Block] = []
    names: list[str] = []
    for kind, k in picked:
        i = int(kind.indices[k])
        cex = None if kind.cex is None or np.isnan(kind.cex[k]).any() else kind.cex[k]
        info = _info(cert, i)
        names = [name for name, _ in info]
        distance = "none"
        if cex is not None:
            point = np.asarray(points[i], dtype=np.float64).reshape(-1)
            distance = fmt(_distance(cex - point, norm))
            if layout is not None:
                images.append(_image_example(cert, kind, i, cex, layout, len(images) + 1, distance))
            else:
                groups.append(len(features))
                features += _feature_rows(point, cex, i, kind)
        examples.append((str(i), kind.name, *(value for _, value in info), distance))
    shown = (f"{len(picked)} of the {total} failures, taken from each kind in turn (a point may fail in more than one "
             "way)" if len(picked) < total else f"All {total} failures")
    blocks.append(Table(("point", "kind", *names, f"‖x′ − x‖ ({norm_name(norm)})"),
                        examples, numeric=(0, *range(2, 3 + len(names))),
                        caption=f"{shown}: what the certificate records at each point x, and the distance from x to "
                                "its counterexample x′ (none: unknown and disagreeing points have no counterexample)."))
    if features:
        blocks.append(Table(("point", "kind", "features moved", "feature", "at the point x", "at the counterexample x′",
                             "change x′ − x"), features, numeric=(0, 3, 4, 5, 6), groups=tuple(groups),
                            caption=f"The features that moved most from each point to its counterexample (up to "
                                    f"{TOP_FEATURES} per point, largest change first)."))
    blocks += images
    return Section(title, anchor, blocks)
