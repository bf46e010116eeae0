"""Loading every installed plugin stays cheap: no SDK (docker, asyncssh, jupyter_client)
is imported until a provider is asked for kernels."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def test_loading_plugins_imports_no_sdk() -> None:
    code = (
        "import sys\n"
        "from kernel_providers.manager import ProviderManager\n"
        "manager = ProviderManager()\n"
        "manager.load_entry_points()\n"
        "providers = manager.collect_providers()\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} &"
        " {'docker', 'asyncssh', 'jupyter_client', 'jupyter_server', 'ipykernel'})\n"
        "import json\n"
        "print(json.dumps({'providers': sorted(providers),"
        " 'errors': [str(e) for e in manager.errors], 'heavy': heavy}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    result = json.loads(out)
    assert result["errors"] == []
    assert {"spec", "conda", "venv", "docker", "ssh", "slurm"} <= set(result["providers"])
    assert result["heavy"] == []


def test_listing_kernels_imports_no_messaging_layer() -> None:
    """`kernel-providers list` with every provider installed never imports pyzmq: it
    talks to no kernel."""
    code = (
        "import sys, io, contextlib\n"
        "from kernel_providers.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    status = main(['list', '--json'])\n"
        "print(status, sorted({m.split('.')[0] for m in sys.modules} & {'zmq'}))\n"
    )
    env = {**os.environ, "KERNEL_PROVIDERS_CONFIG": "/nonexistent/kernel_providers.toml"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env).stdout
    assert out.strip() == "0 []", out
