"""Files and folders we write get the permissions of the user's umask, as open() and mkdir() give, not 0600/0700.

The atomic writers create temporary names and rename them into place; made by tempfile.mkstemp/mkdtemp
those were private to the user, and other users of a shared project folder could not read a run.
"""

import os
import stat
import threading
from pathlib import Path

import pytest

from embeddings.library import Library
from flexibert.data import demo_corpus
from flexibert.utils.files import atomic_write, new_temporary_file, new_temporary_folder, replaced_folder, write_json_atomic

# umask -> (file mode, folder mode) that open() and mkdir() give under it
MODES = {0o022: (0o644, 0o755), 0o077: (0o600, 0o700), 0o002: (0o664, 0o775)}
TINY = {"l": 2, "o": ["sa", "l"], "h": [128, 128], "n": [2, 2], "f": [[256], [256]], "p": ["sdp", "dft"]}

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")


@pytest.fixture(params=sorted(MODES), ids=lambda mask: f"umask{mask:03o}")
def umask(request):
    """Run the test under one umask (restored after); yields the (file, folder) modes expected under it."""
    old = os.umask(request.param)
    try:
        yield MODES[request.param]
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_json_atomic_gives_the_umask_mode(tmp_path, umask):
    path = write_json_atomic(tmp_path / "run" / "results.json", {"score": 1.0})
    assert mode(path) == umask[0]
    write_json_atomic(path, {"score": 2.0})  # replacing an existing file: the new one has the umask's mode too
    assert mode(path) == umask[0]
    assert mode(tmp_path / "run") == umask[1]


def test_atomic_write_binary_and_no_temporary_left(tmp_path, umask):
    target = tmp_path / "weights.bin"
    with atomic_write(target, "wb") as handle:
        handle.write(b"\0\1")
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write("half")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"\0\1" and mode(target) == umask[0]
    assert [p.name for p in tmp_path.iterdir()] == ["weights.bin"]


def test_saved_library_gives_the_umask_mode(tmp_path, umask):
    path = tmp_path / "library.json"
    Library.from_model_dicts([TINY]).save(path)
    assert mode(path) == umask[0]
    assert Library.load(path).model_dicts == [TINY]
    assert [p.name for p in tmp_path.iterdir()] == ["library.json"]


def test_replaced_folder_gives_the_umask_mode(tmp_path, umask):
    target = tmp_path / "dataset"
    for text in ("old", "new"):  # a new folder, then one replacing it
        with replaced_folder(target) as staging:
            (staging / "data.txt").write_text(text)
            (staging / "split").mkdir()
        assert mode(target) == umask[1] and mode(target / "split") == umask[1]
        assert mode(target / "data.txt") == umask[0] and (target / "data.txt").read_text() == text
    assert [p.name for p in tmp_path.iterdir()] == ["dataset"]


def test_demo_data_folders_and_files_give_the_umask_mode(tmp_path, umask):
    out = tmp_path / "demo"
    demo_corpus.prepare_demo_data(out, 4, 4, seed=1)  # Python's own pydoc topics, tiny sizes (< 1 s)
    written = [out, *out.rglob("*")]
    assert not [p for p in written if p.name.startswith(".staging-")]
    wrong = {str(p.relative_to(tmp_path)): oct(mode(p)) for p in written if mode(p) != (umask[0] if p.is_file() else umask[1])}
    assert not wrong


def test_temporary_names_are_unique_under_threads(tmp_path):
    """Many threads at once get distinct files and folders (O_EXCL), never one another's."""
    made, lock = [], threading.Lock()

    def make() -> None:
        for _ in range(50):
            fd, path = new_temporary_file(tmp_path, prefix=".t.")
            os.close(fd)
            folder = new_temporary_folder(tmp_path, prefix=".d.")
            with lock:
                made.extend([path, folder])

    threads = [threading.Thread(target=make) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == len(set(made)) == 800 == len(list(tmp_path.iterdir()))
