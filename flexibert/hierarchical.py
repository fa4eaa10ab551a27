"""Hierarchical step: interpolate between the best trained models of a library to build the next, finer library.

The search first explores a coarse library (layers tied in stacks of ``--old_layers_per_stack``);
this step takes its best-scoring models, interpolates each with its stored neighbours and with the
other top models at the finer ``--new_layers_per_stack`` (embeddings/interpolation.py), and saves
the candidates as a new library with embeddings and neighbours, ready for the next search.

    python flexibert/hierarchical.py --old_dataset_file dataset/dataset_test.json --run_dir runs/test \\
        --new_dataset_file dataset/dataset_test_2.json --old_layers_per_stack 2 --new_layers_per_stack 1
"""

from __future__ import annotations

import sys
import time

from embeddings.design_space import DesignSpaceError
from embeddings.library import LibraryFileError
from flexibert.search.hierarchy import next_level_library, parse_args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        new, output = next_level_library(args)
    except (DesignSpaceError, LibraryFileError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    new.save(output)
    meta = new.metadata
    print(f"saved level-{meta['hierarchy_level']} library of {len(new):,} models ({meta['num_neighbors']} neighbours each) "
          f"to {output} in {time.perf_counter() - start:.1f} s (embedding fidelity: Spearman {meta['fidelity_spearman']:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
