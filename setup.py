"""The wheel of probing, built by the Makefile.

setuptools runs `make deps-check probing agent` for the interpreter that
runs this file (pip's), then lays the results out so that one wheel
installs, into any venv: the `probing` program (venv/bin), the agent for
that interpreter (next to the package for PROBING=1, and in venv/lib/probing
where `probing inject` looks, ../lib/probing from its own directory), the
`probing` package and its probing.pth hook (site-packages), the man page and
the bash completion (venv/share, where man and bash-completion look for a
program in venv/bin). pip uninstall removes every file (all are in the
wheel's RECORD); it leaves the empty share/man and share/bash-completion
directories above them, as pip does for any package. A missing Debian -dev package stops
the build at deps-check with the apt-get line that fixes it.
"""
import os
import shutil
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

ROOT = os.path.dirname(os.path.abspath(__file__))
PYVER = "%d.%d" % sys.version_info[:2]
AGENT = "agent/libprobing-%s.so" % PYVER
STAGE = ".build/pip"  # generated files the wheel takes, relative to ROOT


def make(*targets):
    r = subprocess.run(["make", "-C", ROOT, "--no-print-directory"] + list(targets) +
                       ["PYTHON=" + sys.executable, "PYTHONS=" + sys.executable])
    if r.returncode != 0:
        sys.exit("probing: make %s failed (the lines above say why)" % " ".join(targets))


class BuildWithMake(build_py):
    """Builds the C parts first; adds the agent and probing.pth."""

    def run(self):
        make("deps-check", "probing", "agent")
        stage = os.path.join(ROOT, STAGE)
        os.makedirs(stage, exist_ok=True)
        shutil.copy(os.path.join(ROOT, AGENT), stage)
        os.makedirs(os.path.join(stage, "bash"), exist_ok=True)
        for name, args in (("bash/probing", ["completion", "bash"]),
                           ("probing.1", ["help", "--man"])):
            with open(os.path.join(stage, name), "w") as f:
                subprocess.run([os.path.join(ROOT, "probing")] + args, stdout=f,
                               check=True)
        build_py.run(self)
        shutil.copy(os.path.join(ROOT, AGENT), os.path.join(self.build_lib, "probing"))
        shutil.copy(os.path.join(ROOT, "agent/python/probing.pth"), self.build_lib)

    def get_outputs(self, include_bytecode=1):
        return build_py.get_outputs(self, include_bytecode) + [
            os.path.join(self.build_lib, "probing", os.path.basename(AGENT)),
            os.path.join(self.build_lib, "probing.pth")]


class CopyProgram(Distribution().get_command_class("build_scripts")):
    """Copies the `probing` program as it is (it is not a Python script)."""

    def copy_scripts(self):
        self.mkpath(self.build_dir)
        out = []
        for script in self.scripts:
            dst = os.path.join(self.build_dir, os.path.basename(script))
            self.copy_file(script, dst)
            os.chmod(dst, 0o755)
            out.append(dst)
        return out, out


class PlatformDistribution(Distribution):
    """A wheel per Python and platform: it carries native code."""

    def has_ext_modules(self):
        return True


os.makedirs(os.path.join(ROOT, STAGE), exist_ok=True)
setup(
    distclass=PlatformDistribution,
    cmdclass={"build_py": BuildWithMake, "build_scripts": CopyProgram},
    scripts=["probing"],
    data_files=[
        ("lib/probing", [STAGE + "/" + os.path.basename(AGENT)]),
        ("share/bash-completion/completions", [STAGE + "/bash/probing"]),
        ("share/man/man1", [STAGE + "/probing.1"]),
    ],
    options={"build": {"build_base": STAGE + "/build"},
             "egg_info": {"egg_base": STAGE}},
)
