"""Build a graph library: enumerate a design space (or sample it, or read model dicts), hash, embed, find neighbours, save.

    python embeddings/generate_library.py --design_space_file design_space/design_space_test.yaml \\
        --dataset_file dataset/dataset_test.json --layers_per_stack 2
    python embeddings/generate_library.py --design_space_file design_space/design_space.yaml \\
        --dataset_file dataset/full_sample.json --layers_per_stack 1 --sample 100000 --seed 0 --n_jobs 2
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from embeddings.design_space import DesignSpaceError
from embeddings.library import LibraryFileError
from embeddings.library_builder import build_library, gc_paused, parse_args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    output = Path(args.dataset_file)
    if output.exists() and not args.overwrite:
        print(f"error: {output} exists; pass --overwrite to rebuild it", file=sys.stderr)
        return 2
    start = time.perf_counter()
    with gc_paused():  # a million-model library: the collector's passes would double the time
        try:
            library = build_library(args)
        except (DesignSpaceError, LibraryFileError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        try:
            library.save(output)  # atomic: a failed write leaves no file
        except OSError as err:
            print(f"error: cannot write {output}: {err.strerror or err}; choose another --dataset_file", file=sys.stderr)
            return 2
    meta = library.metadata
    print(f"saved {len(library):,} models with {meta['embedding_size']}-d embeddings and {meta['num_neighbors']} neighbours "
          f"to {output} in {time.perf_counter() - start:.1f} s (embedding fidelity: Spearman {meta['fidelity_spearman']:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
