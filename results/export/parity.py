"""Bundle vs native probabilities: `python results/export/parity.py BUNDLE.csv NATIVE.csv` prints the largest
absolute difference of any class probability and how many class decisions differ (same sample ids)."""

import csv
import sys


def read(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = [c for c in rows[0] if c.startswith("prob_")]
    return {r["sample_id"]: (r["y_pred"], [float(r[c]) for c in columns]) for r in rows}, columns


bundle, bundle_columns = read(sys.argv[1])
native, native_columns = read(sys.argv[2])
assert bundle_columns == native_columns and set(bundle) == set(native), "different classes or samples"
largest = max(abs(a - b) for s in bundle for a, b in zip(bundle[s][1], native[s][1]))
decisions = sum(bundle[s][0] != native[s][0] for s in bundle)
print(f"{len(bundle)} scans, {len(bundle_columns)} classes: max |bundle - native| = {largest:.2e}; "
      f"class decisions that differ: {decisions}")
