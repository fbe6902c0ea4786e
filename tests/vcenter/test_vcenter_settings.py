"""The [vcenter] config table: keys, validation, the password kept out of files and logs."""

from __future__ import annotations

from pathlib import Path

import pytest

from scanner.config import load_config
from scanner.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "avscan.toml"
    path.write_text(text)
    return path


def test_vcenter_table_with_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("VC_SECRET", "s3cret")
    config = load_config(
        write(
            tmp_path,
            """
[vcenter]
url = "https://vc.example.org/sdk"
user = "svc-avscan@vsphere.local"
password_env = "VC_SECRET"
thumbprint = "AA:BB"
[vcenter.policy]
triggers = ["power_on"]
disconnect_at = 50
dry_run = true
""",
        )
    )
    vc = config.vcenter
    assert vc is not None and vc.user == "svc-avscan@vsphere.local" and not vc.insecure
    assert vc.policy.triggers == frozenset({"power_on"}) and vc.policy.dry_run
    assert vc.policy.steps(60) == ("tag", "disconnect") and vc.policy.steps(95) == ("tag", "disconnect", "snapshot")
    assert vc.secret() == "s3cret" and "s3cret" not in repr(vc)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('url = "http://vc/sdk"\nuser = "u"', "insecure = true"),
        ('url = "https://vc/sdk"\nuser = "u"\npassword = "x"', "vcenter.password: unknown key"),
        ('url = "https://vc/sdk"', "vcenter.user: required"),
        ('url = "https://vc/sdk"\nuser = "u"\n[vcenter.policy]\ntriggers = ["reboot"]', "vcenter.policy.triggers"),
        ('url = "https://vc/sdk"\nuser = "u"\n[vcenter.policy]\nsuspend_at = 200', "vcenter.policy.suspend_at"),
    ],
)
def test_bad_vcenter_config_names_the_key(tmp_path: Path, body: str, message: str):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(write(tmp_path, "[vcenter]\n" + body + "\n"))


def test_missing_password_variable_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("AVSCAN_VCENTER_PASSWORD", raising=False)
    config = load_config(write(tmp_path, '[vcenter]\nurl = "https://vc/sdk"\nuser = "u"\n'))
    assert config.vcenter is not None
    with pytest.raises(ConfigError, match="AVSCAN_VCENTER_PASSWORD"):
        config.vcenter.secret()
