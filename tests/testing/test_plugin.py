"""The pytest plugin, as a user's project sees it (run with pytester in a fresh test session)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

APPS = Path(__file__).with_name("apps.py").read_text()


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(service_apps=APPS)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.syspathinsert()
    return pytester


def test_fake_mesh_and_mesh_clock_need_no_configuration(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import httpx
        from service_apps import make_orders, make_users

        def test_order_shows_user_name(fake_mesh):
            fake_mesh.add("users", make_users(), replicas=3)
            fake_mesh.add("orders", make_orders())
            with fake_mesh.client() as client:
                assert client.get("/orders/7").json()["user"]["name"] == "Ada"

        def test_failover(fake_mesh, mesh_clock):
            fake_mesh.add("users", make_users(), replicas=2)
            fake_mesh.fail("users", replica=0, with_=httpx.ConnectError)
            with fake_mesh.client() as client:
                assert all(client.get("/users/1").status_code == 200 for _ in range(10))
            assert fake_mesh.clock is mesh_clock
        """
    )
    project.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_the_marker_configures_policy_and_seed(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest
        from service_apps import make_users

        @pytest.mark.meshware(balancer="round_robin", retries=0, seed=3)
        def test_round_robin(fake_mesh):
            fake_mesh.add("users", make_users(), replicas=3)
            fake_mesh.fail("users", replica=1, with_=503)
            with fake_mesh.client() as client:
                statuses = [client.get("/users/1").status_code for _ in range(6)]
                assert client.policy.balancer == "round_robin"
            assert statuses.count(503) == 2  # no retries, each replica in turn
            assert [c.replica for c in fake_mesh.calls] == [0, 1, 2, 0, 1, 2]

        @pytest.mark.meshware(retries="many")
        def test_bad_marker(fake_mesh):
            pass
        """
    )
    result = project.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*retries must be a whole number*"])


def test_async_tests_with_pytest_asyncio_and_anyio(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest
        from service_apps import make_orders, make_users

        @pytest.mark.asyncio
        async def test_with_pytest_asyncio(fake_mesh):
            fake_mesh.add("users", make_users())
            async with fake_mesh.async_client() as client:
                assert (await client.get("/users/2")).json()["name"] == "Grace"

        @pytest.mark.anyio
        async def test_with_anyio(fake_mesh):
            fake_mesh.add("users", make_users())
            fake_mesh.add("orders", make_orders())
            async with fake_mesh.async_client() as client:
                assert (await client.get("/orders/1")).status_code == 200

        @pytest.fixture
        def anyio_backend():
            return "asyncio"
        """
    )
    project.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_etcd_server_is_skipped_with_a_reason_when_there_is_no_etcd(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("meshware.testing.etcd.find_etcd_binary", lambda: None)
    project.makepyfile(
        """
        def test_needs_etcd(etcd_server):
            pass
        """
    )
    result = project.runpytest("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*needs an etcd binary*"])


def test_the_plugin_imports_nothing_until_a_fixture_is_used(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import sys

        def test_nothing_loaded():
            assert "pytest_meshware" in sys.modules  # the plugin is active...
            assert "meshware" not in sys.modules  # ...and costs nothing
        """
    )
    project.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_apps_imported_in_a_test_session_do_not_register_by_themselves(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from flask import Flask

    from meshware.integrations.flask import Mesh

    app = Flask("quiet")
    with caplog.at_level("INFO", "meshware"):
        mesh = Mesh(app, service="quiet", advertise_url="http://127.0.0.1:1")
    assert mesh.member is not None
    assert mesh.member._starter is None  # no registration thread was started
    assert "inside a pytest session" in caplog.text


def test_the_ini_option_lets_apps_register_again(project: pytest.Pytester) -> None:
    project.makeini(
        "[pytest]\nmeshware_register = true\nasyncio_default_fixture_loop_scope = function\n"
    )
    project.makepyfile(
        """
        import pytest_meshware

        def test_allowed():
            assert pytest_meshware.SUPPRESS_AUTOMATIC_REGISTRATION is False
        """
    )
    project.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
    import pytest_meshware

    assert pytest_meshware.SUPPRESS_AUTOMATIC_REGISTRATION is True  # the outer session's again


# --------------------------------------------------------------------------- the README's project

ROOT = Path(__file__).resolve().parents[2]


def _readme_blocks() -> tuple[str, str]:
    """The pyproject lines and the test module that README's "Testing your services" shows."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Testing your services", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)
    toml = next(body for lang, body in blocks if lang == "toml")
    tests = next(body for lang, body in blocks if body.startswith("# tests/test_services.py"))
    return toml, tests


@pytest.fixture
def readme_project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A fresh project as the README lays it out: two services, tests/, its pyproject lines."""
    toml, tests = _readme_blocks()
    for name in ("users_service.py", "orders_service.py"):
        (pytester.path / name).write_text((ROOT / "examples" / name).read_text())
    (pytester.path / "tests").mkdir()
    (pytester.path / "tests" / "test_services.py").write_text(tests)
    (pytester.path / "pyproject.toml").write_text(toml)
    return pytester


def plain_pytest(project: pytest.Pytester, *args: str) -> tuple[int, str]:
    """``pytest ARGS`` as a user types it in the project (not ``python -m pytest``, which puts
    the current directory on ``sys.path``; nor pytester's runners, which add it to PYTHONPATH)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [str(Path(sys.executable).with_name("pytest")), "-p", "no:cacheprovider", *args],
        cwd=project.path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stdout + done.stderr


def test_the_readme_project_passes_with_plain_pytest_and_no_async_plugin(
    readme_project: pytest.Pytester,
) -> None:
    code, out = plain_pytest(
        readme_project, "tests", "-p", "no:asyncio", "-p", "no:anyio", "-W", "error"
    )
    assert code == 0, out
    assert "3 passed in" in out


def test_the_readme_project_passes_with_pytest_asyncio_in_strict_mode(
    readme_project: pytest.Pytester,
) -> None:
    pytest.importorskip("pytest_asyncio")
    toml = (readme_project.path / "pyproject.toml").read_text()
    assert "asyncio_mode" not in toml  # strict, pytest-asyncio's default
    (readme_project.path / "pyproject.toml").write_text(
        toml + 'asyncio_default_fixture_loop_scope = "function"\n'  # as the README says
    )
    code, out = plain_pytest(readme_project, "tests", "-W", "error")
    assert code == 0, out
    assert "3 passed in" in out
    assert "asyncio: mode=Mode.STRICT" in out


def test_without_the_pythonpath_line_plain_pytest_cannot_import_the_services(
    readme_project: pytest.Pytester,
) -> None:
    (readme_project.path / "pyproject.toml").write_text("[tool.pytest.ini_options]\n")
    code, out = plain_pytest(readme_project, "tests")
    assert code == 2, out
    assert "No module named 'users_service'" in out


def test_the_plugin_runs_async_tests_that_use_it_and_leaves_the_others_to_pytest(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(
        """
        import asyncio
        import pytest

        async def test_with_the_fixture(fake_mesh):
            asyncio.get_running_loop()  # run on an asyncio loop

        @pytest.mark.meshware(retries=0)
        async def test_with_the_marker():
            asyncio.get_running_loop()

        async def test_not_ours():
            pass
        """
    )
    result = project.runpytest("-p", "no:cacheprovider", "-p", "no:asyncio", "-p", "no:anyio")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        ["*async def functions are not natively supported*", "FAILED *::test_not_ours*"]
    )
