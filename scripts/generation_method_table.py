"""Several methods on one generative config, sharing its familiarised and retain-only models: one TOFU-style table.

    python scripts/generation_method_table.py -c quickstart_generation -o runs/gen_methods spul ga_gd npo \
        --set unlearn.learning_rate=... (per-method settings: METHOD:KEY=VALUE, e.g. npo:learning_rate=1e-3)

Each method runs ``spul.pipeline_generation`` in the same output folder (the reference models and the base and
reference evaluations are reused by their keys); the rows go to OUTPUT/methods.md and OUTPUT/methods.json.
"""

from __future__ import annotations

import argparse
import time

from spul.configuration import deep_merge, from_dict, load_yaml, parse_overrides
from spul.interfaces.options import resolve_config_path
from spul.io import write_json, write_text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-c", "--config", default="quickstart_generation")
    p.add_argument("-o", "--output-dir", required=True)
    p.add_argument("methods", nargs="+")
    p.add_argument("--set", action="append", default=[], help="METHOD:KEY=VALUE for that method's unlearn section")
    args = p.parse_args()

    from spul import pipeline_generation as pg
    from spul.evaluation.generation_metrics import tofu_table
    from spul.run_config_generation import GenerationRunConfig

    values = load_yaml(resolve_config_path(args.config))
    values["output_dir"] = args.output_dir
    spul_section = values.get("unlearn", {})
    rows, seen, seconds = [], set(), {}
    for method in args.methods:
        own = [s.split(":", 1)[1] for s in args.set if s.split(":", 1)[0] == method]
        section = dict(spul_section) if method == "spul" else {"method": method}
        section = deep_merge(section, parse_overrides(own))
        cfg = from_dict(GenerationRunConfig, {**values, "unlearn": section})
        started = time.time()
        for row in pg.run(cfg):
            if row["method"] not in seen:
                seen.add(row["method"])
                rows.append(row)
        seconds[method] = round(time.time() - started, 1)
    table = tofu_table(rows) + "\n\n" + pg.detail_table(rows)
    write_text(f"{args.output_dir}/methods.md", table + "\n")
    write_json(f"{args.output_dir}/methods.json", {"rows": rows, "seconds": seconds})
    print(table)
    print(seconds)


if __name__ == "__main__":
    main()
