"""The lab's vcsim client, used by the tests as the vCenter administrator."""

from scanner.lab.vcsim.client import SimClient

__all__ = ["SimClient"]
