"""Install safety (issue 10): a fetch is bound to the package it asked for,
DIR survives a kill at every step of an install or rollback, a re-fetch keeps
the real rollback target, trust.json loses nothing under concurrent fetches,
and a killed fetch leaves no temp trees behind."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from auraseal._fs import is_temp_name
from auraseal.client import fetch_package, install, rollback
from auraseal.client.cache import Cache
from auraseal.client.install import (
    Installed,
    Staging,
    install_lock,
    prev_dir,
    read_record,
    recover,
    swap_in,
)
from auraseal.errors import PackageMismatchError, RollbackError, TreeMismatchError
from auraseal.signing import SigningKey, TrustPolicy

from .conftest import Client
from .faultserver import fault_server
from .helpers import FAST, FILES_V1, files_v2, no_leftovers, snapshot, write_package

DRIVER = Path(__file__).with_name("killdriver.py")
KILLED = 77


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


def _drive(args: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DRIVER), json.dumps(args)],
        env=_env(), capture_output=True, text=True, timeout=120, check=False,
    )


# --- item 2: a fetch is bound to the package it asked for ------------------------


def _two_packages(root: Path, key: SigningKey) -> None:
    write_package(root / "app", FILES_V1, [key], name="app", version=1)
    write_package(root / "other", {"x.txt": b"other\n"}, [key], name="other", version=9)


def _serve_other_as_app(root: Path, key: SigningKey) -> None:
    """The mirror / man-in-the-middle: answers for app with other (same key)."""
    write_package(root / "app", {"x.txt": b"other\n"}, [key], name="other", version=9)


def _refused(client: Client, url: str, exc: type[Exception], **kw: Any) -> None:
    before = snapshot(client.dest)
    rec_before = read_record(client.dest)
    with pytest.raises(exc) as info:
        client(url, **kw)
    assert getattr(info.value, "exit_code", None) == 3
    assert snapshot(client.dest) == before, "DIR changed after a refusal"
    assert read_record(client.dest) == rec_before
    no_leftovers(client.dest)


def test_fetch_refuses_other_package_signed_by_same_key(
    client: Client, key: SigningKey, tmp_path: Path
) -> None:
    root = tmp_path / "srv"
    _two_packages(root, key)
    with fault_server(root) as srv:
        client(srv.url + "app/")
        assert snapshot(client.dest) == FILES_V1
        _serve_other_as_app(root, key)
        _refused(client, srv.url + "app/", PackageMismatchError, manifest_ttl=timedelta(0))
        # a first install is bound by the URL's last segment
        fresh = Client(tmp_path / "fresh", client.policy)
        _refused(fresh, srv.url + "app/", PackageMismatchError)
        assert not fresh.dest.exists()


def test_other_package_answer_cannot_reopen_rollback_of_app(
    client: Client, key: SigningKey, tmp_path: Path
) -> None:
    """Without a cache the install record is the only rollback state: an
    answer with 'other' must not replace it, so app v1 stays refused."""
    root = tmp_path / "srv"
    _two_packages(root, key)
    write_package(root / "app", files_v2(), [key], name="app", version=2)
    with fault_server(root) as srv:
        client(srv.url + "app/", cache_dir=None)
        _serve_other_as_app(root, key)
        _refused(client, srv.url + "app/", PackageMismatchError, cache_dir=None)
        write_package(root / "app", FILES_V1, [key], name="app", version=1)
        _refused(client, srv.url + "app/", RollbackError, cache_dir=None)
        assert snapshot(client.dest) == files_v2()


def test_package_flag_binds_a_url_naming_no_package(
    client: Client, key: SigningKey, tmp_path: Path
) -> None:
    root = tmp_path / "srv"
    write_package(root, FILES_V1, [key], name="site")
    with fault_server(root) as srv:
        _refused(client, srv.url, PackageMismatchError, package="app")
        assert not client.dest.exists()
        client(srv.url, package="site")
        assert snapshot(client.dest) == FILES_V1


def test_rollback_state_kept_per_name_when_dir_changes_package(
    client: Client, key: SigningKey, tmp_path: Path
) -> None:
    """DIR switched to 'other' on purpose (--package) still remembers app v2."""
    root = tmp_path / "srv"
    _two_packages(root, key)
    write_package(root / "app", files_v2(), [key], name="app", version=2)
    with fault_server(root) as srv:
        client(srv.url + "app/", cache_dir=None)
        client(srv.url + "other/", cache_dir=None, package="other")
        write_package(root / "app", FILES_V1, [key], name="app", version=1)
        _refused(client, srv.url + "app/", RollbackError, cache_dir=None, package="app")


# --- re-fetch of the installed version ---------------------------------------------


def test_refetch_same_version_keeps_real_rollback_target(
    client: Client, key: SigningKey, tmp_path: Path
) -> None:
    root = tmp_path / "srv"
    write_package(root, FILES_V1, [key])
    with fault_server(root) as srv:
        client(srv.url)
        write_package(root, files_v2(), [key], version=2)
        client(srv.url, manifest_ttl=timedelta(0))
        (client.dest / "index.html").write_bytes(b"damaged")  # a re-fetch also repairs
        r = client(srv.url, manifest_ttl=timedelta(0))
        assert r.version == 2 and r.previous_version == 1
    assert snapshot(client.dest) == files_v2()
    back = rollback(client.dest)
    assert back.current is not None and back.current.version == 1
    assert snapshot(client.dest) == FILES_V1
    no_leftovers(client.dest)


# --- item 5: a kill at every step is recoverable ------------------------------------


def _files(v: int) -> dict[str, bytes]:
    d = {"v.txt": f"v{v}\n".encode(), f"only/{v}.txt": b"x" * v}
    if v % 2:
        d["odd/deep/f.bin"] = bytes(range(v))
    return d


def _inst(v: int) -> Installed:
    return Installed("app", v, f"{v:064x}", "http://127.0.0.1/", "2026-11-22T03:00:00Z")


def _install(dest: Path, v: int) -> None:
    st = Staging(dest)
    for rel, data in _files(v).items():
        st.file(rel).write_bytes(data)
    swap_in(st, _inst(v))


def _check_consistent(dest: Path, versions: set[int]) -> int:
    """DIR, the record and the previous copy agree; returns DIR's version."""
    with install_lock(dest):
        rec = recover(dest)
    assert rec is not None and rec.pending is None and rec.current is not None
    assert rec.current.version in versions
    assert snapshot(dest) == _files(rec.current.version)
    if rec.previous is not None:
        assert snapshot(prev_dir(dest)) == _files(rec.previous.version)
    no_leftovers(dest)
    return rec.current.version


# (op, versions installed before, version installed by the op, result without a kill)
SCENARIOS = {
    "first": ([], 1, (1, None)),
    "upgrade": ([1, 2], 3, (3, 2)),
    "same-again": ([1, 2], 2, (2, 1)),
    "rollback": ([1, 2], None, (1, 2)),
}


def _forked(op: str, dest: Path, new: int | None, kill_at: int, steps: list[str]) -> int:
    """Run one install (``new``) or rollback in a forked child that calls
    ``os._exit(KILLED)`` at step ``kill_at``; the step names reach ``steps``."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest teardown, no buffered output
        os.close(r)
        count = 0

        def step(name: str) -> None:
            nonlocal count
            os.write(w, name.encode() + b"\n")
            if count == kill_at:
                os._exit(KILLED)
            count += 1

        try:
            if op == "install":
                assert new is not None
                st = Staging(dest)
                for rel, data in _files(new).items():
                    st.file(rel).write_bytes(data)
                swap_in(st, _inst(new), step)
            else:
                rollback(dest, step)
        except BaseException:
            os._exit(1)
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        steps.extend(fh.read().decode().split())
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.parametrize("native", [True, False], ids=["exchange", "three-renames"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_install_killed_at_every_step_is_finished_or_undone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scenario: str, native: bool
) -> None:
    before, new, (want_cur, want_prev) = SCENARIOS[scenario]
    if not native:
        monkeypatch.setattr(install, "rename_exchange", lambda a, b: errno.ENOSYS)
    op = "rollback" if new is None else "install"

    def prepare(n: int) -> Path:
        dest = tmp_path / f"k{n}" / "app"
        for v in before:
            _install(dest, v)
        return dest

    steps: list[str] = []
    dest = prepare(-1)
    assert _forked(op, dest, new, -1, steps) == 0
    assert "journal" in steps and "recorded" in steps
    if not native and before:
        assert "swap-1" in steps and "swap-2" in steps
    rec = read_record(dest)
    assert rec is not None and rec.current is not None
    assert (rec.current.version, rec.previous.version if rec.previous else None) == (
        want_cur, want_prev
    )
    old_cur = before[-1] if before else None
    for n, name in enumerate(steps):
        dest = prepare(n)
        assert _forked(op, dest, new, n, []) == KILLED, name
        got = _check_consistent(dest, {want_cur} | ({old_cur} if old_cur else set()))
        if name in ("swapped", "prev-aside", "prev-kept", "old-aside", "recorded"):
            assert got == want_cur, f"killed after {name}: not rolled forward"
        rec = read_record(dest)
        assert rec is not None and rec.current is not None
        if rec.previous is not None:  # the rollback target is a complete copy
            cur_v, prev_v = rec.current.version, rec.previous.version
            back = rollback(dest)
            assert back.current is not None and back.current.version == prev_v
            assert snapshot(dest) == _files(prev_v)
            assert snapshot(prev_dir(dest)) == _files(cur_v)
            no_leftovers(dest)


def test_recovery_killed_at_every_step_is_recovered_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kill while finishing a killed install (three renames, killed inside
    the exchange) is itself finished by the next run."""
    monkeypatch.setattr(install, "rename_exchange", lambda a, b: errno.ENOSYS)

    def killed_mid_exchange(n: int) -> Path:
        dest = tmp_path / f"r{n}" / "app"
        for v in (1, 2):
            _install(dest, v)
        assert _forked("install", dest, 3, 2, []) == KILLED  # after swap-2: DIR missing
        assert not dest.exists()
        return dest

    steps: list[str] = []
    dest = killed_mid_exchange(-1)
    with install_lock(dest):
        recover(dest, steps.append)
    assert steps == ["prev-aside", "prev-kept", "recorded"]
    for n in range(len(steps)):
        dest = killed_mid_exchange(n)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            hits = 0

            def die(_name: str, at: int = n) -> None:
                nonlocal hits
                if hits == at:
                    os._exit(KILLED)
                hits += 1

            try:
                recover(dest, die)
            finally:
                os._exit(1)
        os.close(r)
        os.close(w)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == KILLED
        assert _check_consistent(dest, {3}) == 3
        rec = read_record(dest)
        assert rec is not None and rec.previous is not None and rec.previous.version == 2


def test_rollback_refuses_half_deleted_previous_copy(tmp_path: Path) -> None:
    """The state a kill during the old 'delete previous copy' left: rollback
    would have installed a half-empty tree."""
    dest = tmp_path / "app"
    for v in (1, 2, 3):
        _install(dest, v)
    (prev_dir(dest) / "only" / "2.txt").unlink()  # half-deleted previous copy
    before = snapshot(dest)
    with pytest.raises(TreeMismatchError) as info:
        rollback(dest)
    assert info.value.exit_code == 1
    assert snapshot(dest) == before
    rec = read_record(dest)
    assert rec is not None and rec.current is not None and rec.current.version == 3


def test_fetch_killed_after_swap_is_finished_by_next_fetch(
    client: Client, key: SigningKey, tmp_path: Path
) -> None:
    root = tmp_path / "srv"
    pub = tmp_path / "key.pub"
    pub.write_bytes(key.public.pem())
    write_package(root, FILES_V1, [key])
    with fault_server(root) as srv:
        client(srv.url)
        v2 = files_v2()
        write_package(root, v2, [key], version=2)
        r = _drive({"op": "fetch", "dest": str(client.dest), "kill_at": 1, "url": srv.url,
                    "steps": str(tmp_path / "steps"), "cache": str(client.cache),
                    "pub": str(pub)})
        assert r.returncode == KILLED, r.stderr
        assert (tmp_path / "steps").read_text().split() == ["journal", "swapped"]
        rep = client(srv.url)  # finishes the killed install first, then re-fetches v2
        assert rep.version == 2 and rep.previous_version == 1
    assert snapshot(client.dest) == v2
    no_leftovers(client.dest)
    back = rollback(client.dest)
    assert back.current is not None and back.current.version == 1
    assert snapshot(client.dest) == FILES_V1


# --- killed fetch: no temp trees left ------------------------------------------------


def test_fetch_killed_mid_download_leaves_no_temp_trees(
    client: Client, key: SigningKey, tmp_path: Path
) -> None:
    root = tmp_path / "srv"
    pub = tmp_path / "key.pub"
    pub.write_bytes(key.public.pem())
    write_package(root, FILES_V1, [key])
    with fault_server(root) as srv:
        client(srv.url)
        write_package(root, files_v2(), [key], version=2)
        srv.fault("js/app.js", "stall")
        srv.hits.clear()
        args = {"op": "fetch", "dest": str(client.dest), "kill_at": -1, "url": srv.url,
                "steps": str(tmp_path / "steps"), "cache": str(client.cache), "pub": str(pub)}
        proc = subprocess.Popen(
            [sys.executable, str(DRIVER), json.dumps(args)], env=_env(),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 30
            while srv.hits["js/app.js"] == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.2)  # other files land in the staging tree
            stages = [
                p for p in client.dest.parent.iterdir()
                if "auraseal-stage" in p.name or is_temp_name(p.name)
            ]
            assert stages, "no staging tree while the fetch runs"
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        srv.clear()
        rep = client(srv.url, manifest_ttl=timedelta(0))
        assert rep.version == 2
    assert snapshot(client.dest) == files_v2()
    no_leftovers(client.dest)
    leftovers = [p.name for p in client.cache.rglob("*") if "tmp" in p.name]
    assert leftovers == []


# --- trust.json under concurrent fetches ---------------------------------------------

_HAMMER = """
import sys
from pathlib import Path
from auraseal.client.cache import Cache
root, who = Path(sys.argv[1]), sys.argv[2]
for i in range(25):
    Cache(root).trust_state.record(f"{who}-{i}", 1, "ab" * 32)
"""


def test_concurrent_trust_records_in_one_cache_are_not_lost(tmp_path: Path) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", _HAMMER, str(tmp_path / "c"), f"p{n}"],
                         env=_env())
        for n in range(4)
    ]
    for p in procs:
        assert p.wait(120) == 0
    state = Cache(tmp_path / "c").trust_state
    missing = [f"p{n}-{i}" for n in range(4) for i in range(25) if state.get(f"p{n}-{i}") is None]
    assert missing == []


def test_concurrent_fetches_of_different_packages_share_one_cache(
    key: SigningKey, policy: TrustPolicy, tmp_path: Path
) -> None:
    root = tmp_path / "srv"
    names = [f"pkg{n}" for n in range(4)]
    for n in names:
        write_package(root / n, {"a.txt": n.encode()}, [key], name=n, version=3)
    pub = tmp_path / "key.pub"
    pub.write_bytes(key.public.pem())
    cache = tmp_path / "cache"
    with fault_server(root) as srv:
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "auraseal", "fetch", srv.url + n + "/", "-o",
                 str(tmp_path / "out" / n), "--cache", str(cache), "--trusted-key", str(pub)],
                env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )
            for n in names
        ]
        for p in procs:
            assert p.wait(120) == 0, p.stderr.read() if p.stderr else ""
            if p.stderr:
                p.stderr.close()
    state = Cache(cache).trust_state
    assert {n: state.get(n) is not None for n in names} == dict.fromkeys(names, True)
    for n in names:
        assert snapshot(tmp_path / "out" / n) == {"a.txt": n.encode()}
    # and they are checked: an older version of one of them is now refused
    write_package(root / "pkg0", {"a.txt": b"old"}, [key], name="pkg0", version=2)
    with fault_server(root) as srv, pytest.raises(RollbackError):
        fetch_package(srv.url + "pkg0/", tmp_path / "fresh", policy=policy, cache_dir=cache,
                      http=FAST)
