import subprocess
import sys

import pytest

from edgevlm.cli import build_parser, main
from edgevlm.errors import UserError
from edgevlm.server.cli import check_args, resolve_bundle, server_config


def parse(*argv: str):
    return build_parser().parse_args(["serve", *argv])


def test_defaults():
    args = parse()
    assert (args.bundle, args.host, args.port, args.api_key, args.max_queue) == (None, "127.0.0.1", 8080, None, None)


def test_stream_interval_default_and_flag():
    assert parse().stream_interval_ms == 20 and parse("--stream-interval-ms", "0").stream_interval_ms == 0


def test_config_from_flags_and_env(monkeypatch):
    monkeypatch.setenv("EDGEVLM_API_KEY", "from-env")
    args = parse("--cors-origin", "https://a", "--allow-image-host", "Img.Example.org", "--max-image-mb", "2")
    config = server_config(args, "m")
    assert config.api_key == "from-env" and config.cors_origins == ("https://a",)
    assert config.image_hosts == ("img.example.org",) and config.max_image_bytes == 2 * 1024 * 1024
    assert server_config(parse("--api-key", "flag"), "m").api_key == "flag"


@pytest.mark.parametrize(
    "argv", [("--port", "0"), ("--max-queue", "-1"), ("--kv-cache-mb", "0"), ("--prefix-cache-mb", "-1"),
             ("--grace-period", "-1"), ("--stream-interval-ms", "-5"), ("--threads", "0")]
)
def test_bad_flags_are_user_errors(argv):
    with pytest.raises(UserError):
        check_args(parse(*argv))


def test_missing_or_broken_bundle(tmp_path, capsys):
    with pytest.raises(UserError, match="not a bundle"):
        resolve_bundle(parse("--bundle", str(tmp_path)))
    (tmp_path / "manifest.json").write_text("{oops")
    with pytest.raises(UserError, match="not valid JSON"):
        resolve_bundle(parse("--bundle", str(tmp_path)))
    assert main(["serve", "--bundle", str(tmp_path / "missing")]) == 2
    assert "not a bundle" in capsys.readouterr().err


def test_named_after_bundle_folder(tmp_path):
    (tmp_path / "manifest.json").write_text("{}")
    assert resolve_bundle(parse("--bundle", str(tmp_path)))[1] == tmp_path.name
    assert resolve_bundle(parse("--bundle", str(tmp_path), "--model-name", "glm"))[1] == "glm"


def imported_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}; import sys; print(*sys.modules)"], check=True, text=True, capture_output=True
    ).stdout
    return set(out.split())


def test_serving_never_imports_torch_or_the_exporter():
    server = imported_after("import edgevlm.server.app, edgevlm.server.cli, edgevlm.server.demo_bundle")
    assert not server & {"torch", "edgevlm.export", "edgevlm.calibration"}
    # The top-level CLI registers every subcommand (their light cli modules), still without torch.
    assert "torch" not in imported_after("import edgevlm.cli; edgevlm.cli.build_parser()")
