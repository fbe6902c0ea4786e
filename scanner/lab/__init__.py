"""The guest lab: a tiny real Linux guest under QEMU for tests, benchmarks and the demo.

Built at run time from Debian packages (cloud kernel + busybox-static initramfs), booted with
its RAM in a shared ``/dev/shm`` file and a QMP socket; marker processes hold a benign EICAR
test string in memory, a clean process holds none. See :class:`LabGuest`. A clonable guest
saved as a template (:class:`LabSnapshot`) resumes as many clones, each with its own workload.
"""

from scanner.acquisition.qmp import QmpError
from scanner.lab.clone import LabSnapshot
from scanner.lab.console import GuestProcess, MapEntry
from scanner.lab.errors import LabError
from scanner.lab.guest import LabGuest
from scanner.lab.image import LabImage, build_image, cache_dir
from scanner.lab.markers import eicar, variant_tag

__all__ = [
    "GuestProcess",
    "LabError",
    "LabGuest",
    "LabImage",
    "LabSnapshot",
    "MapEntry",
    "QmpError",
    "build_image",
    "cache_dir",
    "eicar",
    "variant_tag",
]
