"""pip: `pip install .` from the checkout and `pip wheel .` into a fresh
venv of the system Python (no system site packages): the `probing`
program, the agent and the package with its .pth hook; PROBING=1 and
`probing inject` work from the venv; `pip uninstall` leaves no file behind;
a missing Debian -dev package stops the build with the apt-get line."""
import os
import subprocess
import zipfile

from conftest import PY, ROOT, WORKLOADS, Proc, agent_listening

PYVER = "%d.%d" % tuple(map(int, subprocess.run(
    [PY, "-c", "import sys; print('%d %d' % sys.version_info[:2])"],
    capture_output=True, text=True, check=True).stdout.split()))


def run(argv, **kw):
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("PROBING") or k in ("PYTHONPATH", "PYTHONUSERBASE", "VIRTUAL_ENV"):
            del env[k]
    env.update(kw.pop("env", {}))
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, **kw)


def files(root):
    out = set()
    for d, _, fs in os.walk(root):
        for f in fs:
            if "__pycache__" not in d:
                out.add(os.path.relpath(os.path.join(d, f), root))
    return out


def empty_dirs(root):
    return {os.path.relpath(d, root) for d, sub, fs in os.walk(root) if not fs and not sub}


def test_pip_install_inject_uninstall(tmp_path):
    venv = str(tmp_path / "venv")
    r = run([PY, "-m", "venv", venv])
    assert r.returncode == 0, r.stderr
    before = files(venv)
    empty_before = empty_dirs(venv)  # include/python3.X, or include on 3.14
    pip = [os.path.join(venv, "bin", "python"), "-m", "pip", "--disable-pip-version-check"]

    r = run(pip + ["install", "-q", ROOT])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    site = os.path.join(venv, "lib", "python" + PYVER, "site-packages")
    for path in ("bin/probing", "lib/probing/libprobing-%s.so" % PYVER,
                 "share/bash-completion/completions/probing", "share/man/man1/probing.1"):
        assert os.path.exists(os.path.join(venv, path)), path
    for path in ("probing.pth", "probing/__init__.py", "probing/_boot.py",
                 "probing/libprobing-%s.so" % PYVER):
        assert os.path.exists(os.path.join(site, path)), path
    prog = os.path.join(venv, "bin", "probing")
    assert os.access(prog, os.X_OK)
    r = run([prog, "--version"])
    assert r.returncode == 0 and r.stdout.startswith("probing ")

    vpy = os.path.join(venv, "bin", "python")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for k in list(env):
        if k.startswith("PROBING") or k in ("PYTHONPATH", "PYTHONUSERBASE"):
            del env[k]
    started = Proc([vpy, os.path.join(WORKLOADS, "idle.py")], dict(env, PROBING="1"))
    plain = Proc([vpy, os.path.join(WORKLOADS, "idle.py")], env)
    try:
        started.wait_agent()
        started.wait_out("ready")  # answer is set
        r = run([prog, "-t", str(started.pid), "eval", "answer + 1"])
        assert r.returncode == 0 and r.stdout.strip() == "42", r.stderr
        plain.wait_out("ready")
        assert not agent_listening(plain.pid)
        r = run([prog, "-t", str(plain.pid), "inject"])
        assert r.returncode == 0, r.stderr
        r = run([prog, "-t", str(plain.pid), "eval", "answer"])
        assert r.returncode == 0 and r.stdout.strip() == "41", r.stderr
        with open("/proc/%d/maps" % plain.pid) as f:
            assert os.path.join(venv, "lib", "probing") in f.read()
        assert started.alive() and plain.alive()
    finally:
        started.kill()
        plain.kill()

    r = run(pip + ["uninstall", "-y", "-q", "probing"])
    assert r.returncode == 0, r.stderr
    assert files(venv) - before == set()
    # pip removes the directories it put files in, not their new parents.
    left = empty_dirs(venv) - empty_before
    assert left <= {"share/man", "share/bash-completion"}, left

    # The wheel: the same layout, installable without building.
    dist = str(tmp_path / "dist")
    r = run(pip + ["wheel", "-q", "--no-deps", "-w", dist, ROOT])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (whl,) = os.listdir(dist)
    tag = "cp%s-cp%s" % (PYVER.replace(".", ""), PYVER.replace(".", ""))
    assert whl.startswith("probing-0.1.0-" + tag) and whl.endswith("linux_x86_64.whl"), whl
    names = set(zipfile.ZipFile(os.path.join(dist, whl)).namelist())
    for n in ("probing.pth", "probing/_boot.py", "probing/libprobing-%s.so" % PYVER,
              "probing-0.1.0.data/scripts/probing",
              "probing-0.1.0.data/data/lib/probing/libprobing-%s.so" % PYVER):
        assert n in names, (n, sorted(names))
    r = run(pip + ["install", "-q", os.path.join(dist, whl)])
    assert r.returncode == 0, r.stderr
    r = run([prog, "--version"])
    assert r.returncode == 0
    r = run(pip + ["uninstall", "-y", "-q", "probing"])
    assert r.returncode == 0 and files(venv) - before == set()


def test_pip_build_names_the_missing_dev_package(tmp_path):
    venv = str(tmp_path / "venv")
    assert run([PY, "-m", "venv", venv]).returncode == 0
    # As if libprobing-missing-dev were a build dependency not installed.
    r = run([os.path.join(venv, "bin", "python"), "-m", "pip", "install", ROOT],
            env={"PROBING_BUILD_PKGS": "libevent-dev libprobing-missing-dev"})
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "probing: fix with: apt-get install libprobing-missing-dev" in out, out[-3000:]
    assert not os.path.exists(os.path.join(venv, "bin", "probing"))
