"""``python -m scanner.lab [--memory MIB] [--markers N] [--variant V]``: boot one guest and wait.

Builds the image if needed, boots a guest, prints where its RAM and QMP socket are, and keeps
it running until Ctrl-C (the guest and its files are removed on exit).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

from scanner.lab.guest import LabGuest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scanner.lab", description=__doc__)
    parser.add_argument("--memory", type=int, default=256, help="guest RAM in MiB")
    parser.add_argument("--markers", type=int, default=1, help="marker processes")
    parser.add_argument("--variant", default="0", help="workload variant id")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with LabGuest.start(memory_mib=args.memory, markers=args.markers, variant=args.variant) as guest:
        print(f"accel:    {guest.accel} (READY after {guest.boot_seconds:.1f}s)")
        print(f"ram:      {guest.ram_path}")
        print(f"qmp:      {guest.qmp_path}")
        print(f"console:  {guest.console_path}")
        print(f"markers:  {guest.marker_pids}  clean: {guest.clean_pid}")
        print("Ctrl-C stops the guest.", flush=True)
        try:
            while guest.status() != "shutdown":
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
