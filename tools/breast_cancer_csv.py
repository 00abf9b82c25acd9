"""Writes data/breast_cancer.csv from the copy of the Wisconsin Diagnostic Breast Cancer data
that scikit-learn ships.

What it is
    scikit-learn's sklearn/datasets/data/breast_cancer.csv is not a plain table: its first row
    is "569,30,malignant,benign" (row count, feature count, then the names of classes 0 and 1),
    and each following row is the 30 features followed by the class (0 = malignant,
    1 = benign). This script checks that layout and rewrites it as Kiln's CSV layout:
    a header row of names, then one row per sample, `label,feature1,...,feature30`, where the
    label column is `malignant` (1 = malignant, 0 = benign). Feature values are copied as
    text, unchanged.

How to run (from the repository root); only the standard library is needed
    pip download --no-deps scikit-learn -d /tmp/skl
    (cd /tmp/skl && unzip -o -q scikit_learn-*.whl sklearn/datasets/data/breast_cancer.csv)
    python3 tools/breast_cancer_csv.py /tmp/skl/sklearn/datasets/data/breast_cancer.csv

The feature names are scikit-learn's (load_breast_cancer().feature_names) with spaces
written as underscores.
"""

import csv
import sys

KINDS = ["mean", "error", "worst"]
MEASURES = [
    "radius", "texture", "perimeter", "area", "smoothness", "compactness", "concavity",
    "concave_points", "symmetry", "fractal_dimension",
]


def names():
    out = []
    for kind in KINDS:
        for m in MEASURES:
            # scikit-learn: "mean radius", "radius error", "worst radius".
            out.append(f"{m}_error" if kind == "error" else f"{kind}_{m}")
    return out


def main(src, dst="data/breast_cancer.csv"):
    with open(src, newline="") as f:
        rows = list(csv.reader(f))
    n, d = int(rows[0][0]), int(rows[0][1])
    assert rows[0][2:] == ["malignant", "benign"], rows[0]
    assert (n, d) == (569, 30) and len(rows) == n + 1, (n, d, len(rows))
    out = []
    for r in rows[1:]:
        assert len(r) == d + 1, r
        [float(v) for v in r[:d]]  # every feature is a number
        cls = int(r[d])
        assert cls in (0, 1), r
        out.append([str(1 - cls)] + r[:d])  # sklearn's 0 (malignant) becomes label 1
    with open(dst, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["malignant"] + names())
        w.writerows(out)
    malignant = sum(r[0] == "1" for r in out)
    print(f"wrote {dst}: {len(out)} rows, {d} features, {malignant} malignant, {len(out) - malignant} benign")


if __name__ == "__main__":
    main(*sys.argv[1:])
