"""vCenter in the loop (pyvmomi at this edge only; the core never imports it).

- ``settings``: the ``[vcenter]`` config and the quarantine policy
- ``connection``: session, TLS/pinning, re-login, keep-alive, calls off the loop, task waits
- ``inventory``: VMs with host, power, guest OS, instance UUID and datastore files
- ``triggers``: power-on / migration events and the ``avscan.request`` attribute
- ``acquisition``: snapshot with memory, datastore download, snapshot always removed
- ``actions`` / ``tags``: verdict attributes, tag, event, the quarantine ladder and its release
- ``store``: durable cursor, jobs and the action outbox (SQLite)
- ``pgstore``: the same, once for a fleet in PostgreSQL (jobs claimed by their host's appliance)
- ``service``: the loop that ties them together (started by ``App.start_vcenter``)
"""
