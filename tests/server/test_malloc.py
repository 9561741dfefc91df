import subprocess
import sys

SCRIPT = "from edgevlm.server.malloc import cap_malloc_arenas; print(cap_malloc_arenas())"


def _run(env: dict[str, str]) -> str:
    return subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_glibc_takes_the_cap_unless_the_operator_chose() -> None:
    import os

    base = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    assert _run(base) == "True"  # Linux with glibc, as in CI and the Docker image
    assert _run({**base, "MALLOC_ARENA_MAX": "4"}) == "False"
