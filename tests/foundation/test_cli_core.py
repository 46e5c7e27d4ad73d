"""The CLI as a user runs it: exit codes, one-line messages, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from auraseal.ledger import open_ledger

EX = Path(__file__).resolve().parents[2] / "src" / "auraseal" / "examples" / "site"


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "auraseal", *args],
        capture_output=True, text=True, cwd=cwd, timeout=120,
    )


def assert_clean_error(p: subprocess.CompletedProcess[str], code: int, match: str) -> None:
    assert p.returncode == code, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    assert match in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) >= 1


def test_hash_and_check(tmp_path: Path) -> None:
    f = tmp_path / "f.txt"
    f.write_bytes(b"hello\n")
    g = tmp_path / "g.txt"
    g.write_bytes(b"world\n")
    out = run("hash", str(f)).stdout.strip()
    assert out.startswith("auraseal-sha512-") and out.count("-") == 2
    assert run("hash", str(f), "--sri", "--algorithm", "sha256").stdout.strip() == (
        "sha256-WJG1tSLV3whtD/CxEPvZ0hu0/HFjrzTQgoai6Eb2vgM="
    )
    dual = run("hash", str(f), "--recovery", str(g)).stdout.strip()
    assert dual.count("-") == 3
    assert run("check", str(g), dual).returncode == 0
    assert run("check", str(f), out).returncode == 0
    assert_clean_error(run("check", str(g), out), 1, "integrity mismatch")
    assert_clean_error(run("check", str(f), "sha512-@@"), 2, "base64")
    assert_clean_error(run("check", str(tmp_path / "nope"), out), 2, "no such file")
    assert json.loads(run("hash", str(f), "--json").stdout)["integrity"] == out


def test_usage_error_exit_2() -> None:
    p = run("manifest", "build")
    assert p.returncode == 2 and "required" in p.stderr and "Traceback" not in p.stderr


@pytest.fixture()
def signed_site(tmp_path: Path) -> tuple[Path, Path]:
    tree = tmp_path / "site"
    subprocess.run(["cp", "-r", str(EX), str(tree)], check=True)
    for name in ("k1", "k2", "k3"):
        assert run("keygen", str(tmp_path / name)).returncode == 0
    return tree, tmp_path


def test_build_verify_tamper_threshold_rollback(signed_site: tuple[Path, Path]) -> None:
    tree, d = signed_site
    m = d / "m.json"
    p = run("manifest", "build", str(tree), "-o", str(m), "--version", "5",
            "--key", str(d / "k1"), "--key", str(d / "k2"), "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["files"] == 5
    trust = ["--trusted-key", str(d / "k1.pub"), "--trusted-key", str(d / "k2.pub"),
             "--trusted-key", str(d / "k3.pub")]
    st = ["--state", str(d / "state.json")]
    ok = run("manifest", "verify", str(tree), "--manifest", str(m), *trust,
             "--threshold", "2", *st)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.rstrip().endswith("verified: 2 of 3 trusted signatures (threshold 2)")
    assert_clean_error(
        run("manifest", "verify", str(tree), "--manifest", str(m), *trust, "--threshold", "3"),
        3, "2 of the required 3",
    )
    assert_clean_error(
        run("manifest", "verify", str(tree), "--manifest", str(m),
            "--trusted-key", str(d / "k3.pub")),
        3, "untrusted",
    )
    # rollback: version 4 after 5 was trusted
    m4 = d / "m4.json"
    run("manifest", "build", str(tree), "-o", str(m4), "--version", "4", "--key", str(d / "k1"),
        "--key", str(d / "k2"))
    assert_clean_error(
        run("manifest", "verify", str(tree), "--manifest", str(m4), *trust, "--threshold", "2",
            *st),
        3, "rollback",
    )
    # freeze: an expired manifest
    mx = d / "mx.json"
    run("manifest", "build", str(tree), "-o", str(mx), "--version", "9", "--expires", "0s",
        "--key", str(d / "k1"))
    assert_clean_error(
        run("manifest", "verify", str(tree), "--manifest", str(mx),
            "--trusted-key", str(d / "k1.pub")),
        3, "expired",
    )
    # tamper: every difference listed, exit 1
    (tree / "js" / "app.js").write_text("evil()")
    (tree / "css" / "site.css").unlink()
    (tree / "extra.js").write_text("x")
    bad = run("manifest", "verify", str(tree), "--manifest", str(m), *trust, "--threshold", "2")
    assert_clean_error(bad, 1, "1 modified, 1 missing, 1 unexpected")
    assert "js/app.js: modified" in bad.stderr
    assert "css/site.css: missing" in bad.stderr
    assert "extra.js: unexpected" in bad.stderr


def test_hostile_manifest_and_tree(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "a").write_text("a")
    evil = tmp_path / "evil.json"
    evil.write_text(json.dumps({"../../etc/passwd": {"integrity": "sha256-" + "A" * 43 + "=",
                                                     "size": 1}}))
    assert_clean_error(run("manifest", "verify", str(tree), "--manifest", str(evil)), 2, "'..'")
    (tree / "out").symlink_to("/etc/passwd")
    assert_clean_error(run("manifest", "build", str(tree)), 2, "symlink leaves the tree")
    assert not (tree / "integrity-manifest.json").exists()


def test_formats_from_cli(tmp_path: Path) -> None:
    out = tmp_path / "index.json"
    p = run("manifest", "build", str(EX), "-o", str(out), "--format", "blockhub",
            "--base-url", "https://cdn.example/site")
    assert p.returncode == 0, p.stderr
    doc = json.loads(out.read_text())
    assert doc["files"]["js/app.js"]["url"] == "https://cdn.example/site/js/app.js"
    assert len(doc["files"]["js/app.js"]["sha256"]) == 64
    assert run("manifest", "verify", str(EX), "--manifest", str(out)).returncode == 0


def test_json_errors_are_machine_readable(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x")
    p = run("check", str(f), "sha256-" + "A" * 43 + "=", "--json")
    assert p.returncode == 1
    err = json.loads(p.stdout)["error"]
    assert err["type"] == "DigestMismatchError" and err["exit_code"] == 1
    assert err["where"] == str(f)


def test_manifest_verify_records_ledger_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.setenv("AURASEAL_LEDGER", url)
    m = tmp_path / "m.json"
    assert run("manifest", "build", str(EX), "-o", str(m)).returncode == 0
    assert run("manifest", "verify", str(EX), "--manifest", str(m)).returncode == 0
    with open_ledger(url) as led:
        events = [e for e in led.pending() if e.entry_type == "manifest_verify"]
    assert len(events) == 1


def test_manifest_verify_says_whether_signatures_were_verified(
    signed_site: tuple[Path, Path],
) -> None:
    """Matching hashes alone never read as "verified": the output says which it is."""
    tree, d = signed_site
    m2, m0 = d / "m2.json", d / "m0.json"
    assert run("manifest", "build", str(tree), "-o", str(m2), "--key", str(d / "k1"),
               "--key", str(d / "k2")).returncode == 0
    assert run("manifest", "build", str(tree), "-o", str(m0)).returncode == 0
    trust = ["--trusted-key", str(d / "k1.pub"), "--trusted-key", str(d / "k2.pub")]
    p = run("manifest", "verify", str(tree), "--manifest", str(m2), *trust)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().endswith("; verified: 2 of 2 trusted signatures (threshold 1)")
    p = run("manifest", "verify", str(tree), "--manifest", str(m2), *trust, "--json")
    sig = json.loads(p.stdout)["signature"]
    assert sig["status"] == "verified" and sig["signatures"] == 2 and sig["trusted_keys"] == 2
    p = run("manifest", "verify", str(tree), "--manifest", str(m0))
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().endswith("; hashes match; NOT signed")
    assert json.loads(run("manifest", "verify", str(tree), "--manifest", str(m0),
                          "--json").stdout)["signature"]["status"] == "unsigned"
    p = run("manifest", "verify", str(tree), "--manifest", str(m2))
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().endswith(
        "; hashes match; NOT verified: 2 signature(s) not checked (no --trusted-key)"
    )
