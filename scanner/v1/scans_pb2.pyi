import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from scanner.v1 import verdict_pb2 as _verdict_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ScanState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCAN_STATE_UNSPECIFIED: _ClassVar[ScanState]
    SCAN_STATE_QUEUED: _ClassVar[ScanState]
    SCAN_STATE_RUNNING: _ClassVar[ScanState]
    SCAN_STATE_DONE: _ClassVar[ScanState]
    SCAN_STATE_CANCELLED: _ClassVar[ScanState]
    SCAN_STATE_INTERRUPTED: _ClassVar[ScanState]

class OsAwareness(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OS_AWARENESS_UNSPECIFIED: _ClassVar[OsAwareness]
    OS_AWARENESS_AUTO: _ClassVar[OsAwareness]
    OS_AWARENESS_PROCESSES: _ClassVar[OsAwareness]
    OS_AWARENESS_PHYSICAL: _ClassVar[OsAwareness]

class Consistency(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONSISTENCY_UNSPECIFIED: _ClassVar[Consistency]
    CONSISTENCY_RUNNING: _ClassVar[Consistency]
    CONSISTENCY_PAUSED: _ClassVar[Consistency]
SCAN_STATE_UNSPECIFIED: ScanState
SCAN_STATE_QUEUED: ScanState
SCAN_STATE_RUNNING: ScanState
SCAN_STATE_DONE: ScanState
SCAN_STATE_CANCELLED: ScanState
SCAN_STATE_INTERRUPTED: ScanState
OS_AWARENESS_UNSPECIFIED: OsAwareness
OS_AWARENESS_AUTO: OsAwareness
OS_AWARENESS_PROCESSES: OsAwareness
OS_AWARENESS_PHYSICAL: OsAwareness
CONSISTENCY_UNSPECIFIED: Consistency
CONSISTENCY_RUNNING: Consistency
CONSISTENCY_PAUSED: Consistency

class FilesTarget(_message.Message):
    __slots__ = ("paths",)
    PATHS_FIELD_NUMBER: _ClassVar[int]
    paths: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, paths: _Optional[_Iterable[str]] = ...) -> None: ...

class MemoryTarget(_message.Message):
    __slots__ = ("path", "format", "os", "kernel_path")
    PATH_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    OS_FIELD_NUMBER: _ClassVar[int]
    KERNEL_PATH_FIELD_NUMBER: _ClassVar[int]
    path: str
    format: str
    os: OsAwareness
    kernel_path: str
    def __init__(self, path: _Optional[str] = ..., format: _Optional[str] = ..., os: _Optional[_Union[OsAwareness, str]] = ..., kernel_path: _Optional[str] = ...) -> None: ...

class GuestTarget(_message.Message):
    __slots__ = ("ram_path", "qmp_socket", "driver", "consistency", "max_pause_seconds", "domain", "kvmi_socket", "os", "kernel_path", "libvirt_domain", "libvirt_uri")
    RAM_PATH_FIELD_NUMBER: _ClassVar[int]
    QMP_SOCKET_FIELD_NUMBER: _ClassVar[int]
    DRIVER_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    MAX_PAUSE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    KVMI_SOCKET_FIELD_NUMBER: _ClassVar[int]
    OS_FIELD_NUMBER: _ClassVar[int]
    KERNEL_PATH_FIELD_NUMBER: _ClassVar[int]
    LIBVIRT_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    LIBVIRT_URI_FIELD_NUMBER: _ClassVar[int]
    ram_path: str
    qmp_socket: str
    driver: str
    consistency: Consistency
    max_pause_seconds: float
    domain: str
    kvmi_socket: str
    os: OsAwareness
    kernel_path: str
    libvirt_domain: str
    libvirt_uri: str
    def __init__(self, ram_path: _Optional[str] = ..., qmp_socket: _Optional[str] = ..., driver: _Optional[str] = ..., consistency: _Optional[_Union[Consistency, str]] = ..., max_pause_seconds: _Optional[float] = ..., domain: _Optional[str] = ..., kvmi_socket: _Optional[str] = ..., os: _Optional[_Union[OsAwareness, str]] = ..., kernel_path: _Optional[str] = ..., libvirt_domain: _Optional[str] = ..., libvirt_uri: _Optional[str] = ...) -> None: ...

class DiskTarget(_message.Message):
    __slots__ = ("path", "format", "qmp_socket", "device", "libvirt_domain", "libvirt_uri")
    PATH_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    QMP_SOCKET_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    LIBVIRT_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    LIBVIRT_URI_FIELD_NUMBER: _ClassVar[int]
    path: str
    format: str
    qmp_socket: str
    device: str
    libvirt_domain: str
    libvirt_uri: str
    def __init__(self, path: _Optional[str] = ..., format: _Optional[str] = ..., qmp_socket: _Optional[str] = ..., device: _Optional[str] = ..., libvirt_domain: _Optional[str] = ..., libvirt_uri: _Optional[str] = ...) -> None: ...

class Target(_message.Message):
    __slots__ = ("files", "memory", "guest", "disk")
    FILES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    GUEST_FIELD_NUMBER: _ClassVar[int]
    DISK_FIELD_NUMBER: _ClassVar[int]
    files: FilesTarget
    memory: MemoryTarget
    guest: GuestTarget
    disk: DiskTarget
    def __init__(self, files: _Optional[_Union[FilesTarget, _Mapping]] = ..., memory: _Optional[_Union[MemoryTarget, _Mapping]] = ..., guest: _Optional[_Union[GuestTarget, _Mapping]] = ..., disk: _Optional[_Union[DiskTarget, _Mapping]] = ...) -> None: ...

class ScanOptions(_message.Message):
    __slots__ = ("unit_timeout_seconds", "ruleset_digest", "subject")
    UNIT_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RULESET_DIGEST_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    unit_timeout_seconds: int
    ruleset_digest: str
    subject: ScanSubject
    def __init__(self, unit_timeout_seconds: _Optional[int] = ..., ruleset_digest: _Optional[str] = ..., subject: _Optional[_Union[ScanSubject, _Mapping]] = ...) -> None: ...

class ScanSubject(_message.Message):
    __slots__ = ("name", "id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: str
    def __init__(self, name: _Optional[str] = ..., id: _Optional[str] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("bytes_done", "bytes_total", "units_done", "units_total", "findings")
    BYTES_DONE_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    UNITS_DONE_FIELD_NUMBER: _ClassVar[int]
    UNITS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    FINDINGS_FIELD_NUMBER: _ClassVar[int]
    bytes_done: int
    bytes_total: int
    units_done: int
    units_total: int
    findings: int
    def __init__(self, bytes_done: _Optional[int] = ..., bytes_total: _Optional[int] = ..., units_done: _Optional[int] = ..., units_total: _Optional[int] = ..., findings: _Optional[int] = ...) -> None: ...

class Scan(_message.Message):
    __slots__ = ("scan_id", "state", "target", "options", "requested_by", "request_id", "created_at", "progress", "verdict", "attempts")
    SCAN_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_BY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    scan_id: str
    state: ScanState
    target: Target
    options: ScanOptions
    requested_by: str
    request_id: str
    created_at: _timestamp_pb2.Timestamp
    progress: Progress
    verdict: _verdict_pb2.Verdict
    attempts: int
    def __init__(self, scan_id: _Optional[str] = ..., state: _Optional[_Union[ScanState, str]] = ..., target: _Optional[_Union[Target, _Mapping]] = ..., options: _Optional[_Union[ScanOptions, _Mapping]] = ..., requested_by: _Optional[str] = ..., request_id: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., verdict: _Optional[_Union[_verdict_pb2.Verdict, _Mapping]] = ..., attempts: _Optional[int] = ...) -> None: ...

class StartScanRequest(_message.Message):
    __slots__ = ("target", "options", "request_id")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    target: Target
    options: ScanOptions
    request_id: str
    def __init__(self, target: _Optional[_Union[Target, _Mapping]] = ..., options: _Optional[_Union[ScanOptions, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class StartScanResponse(_message.Message):
    __slots__ = ("scan",)
    SCAN_FIELD_NUMBER: _ClassVar[int]
    scan: Scan
    def __init__(self, scan: _Optional[_Union[Scan, _Mapping]] = ...) -> None: ...

class WatchScanRequest(_message.Message):
    __slots__ = ("scan_id",)
    SCAN_ID_FIELD_NUMBER: _ClassVar[int]
    scan_id: str
    def __init__(self, scan_id: _Optional[str] = ...) -> None: ...

class WatchScanResponse(_message.Message):
    __slots__ = ("progress", "finding", "done")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    FINDING_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    progress: Progress
    finding: _verdict_pb2.Finding
    done: Scan
    def __init__(self, progress: _Optional[_Union[Progress, _Mapping]] = ..., finding: _Optional[_Union[_verdict_pb2.Finding, _Mapping]] = ..., done: _Optional[_Union[Scan, _Mapping]] = ...) -> None: ...

class GetScanRequest(_message.Message):
    __slots__ = ("scan_id",)
    SCAN_ID_FIELD_NUMBER: _ClassVar[int]
    scan_id: str
    def __init__(self, scan_id: _Optional[str] = ...) -> None: ...

class GetScanResponse(_message.Message):
    __slots__ = ("scan",)
    SCAN_FIELD_NUMBER: _ClassVar[int]
    scan: Scan
    def __init__(self, scan: _Optional[_Union[Scan, _Mapping]] = ...) -> None: ...

class ListScansRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "state")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    state: ScanState
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., state: _Optional[_Union[ScanState, str]] = ...) -> None: ...

class ListScansResponse(_message.Message):
    __slots__ = ("scans", "next_page_token")
    SCANS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    scans: _containers.RepeatedCompositeFieldContainer[Scan]
    next_page_token: str
    def __init__(self, scans: _Optional[_Iterable[_Union[Scan, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListFindingsRequest(_message.Message):
    __slots__ = ("scan_id", "page_size", "page_token")
    SCAN_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    scan_id: str
    page_size: int
    page_token: str
    def __init__(self, scan_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListFindingsResponse(_message.Message):
    __slots__ = ("findings", "next_page_token")
    FINDINGS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    findings: _containers.RepeatedCompositeFieldContainer[_verdict_pb2.Finding]
    next_page_token: str
    def __init__(self, findings: _Optional[_Iterable[_Union[_verdict_pb2.Finding, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelScanRequest(_message.Message):
    __slots__ = ("scan_id",)
    SCAN_ID_FIELD_NUMBER: _ClassVar[int]
    scan_id: str
    def __init__(self, scan_id: _Optional[str] = ...) -> None: ...

class CancelScanResponse(_message.Message):
    __slots__ = ("scan",)
    SCAN_FIELD_NUMBER: _ClassVar[int]
    scan: Scan
    def __init__(self, scan: _Optional[_Union[Scan, _Mapping]] = ...) -> None: ...

class ScanBytesHeader(_message.Message):
    __slots__ = ("name", "ruleset_digest")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RULESET_DIGEST_FIELD_NUMBER: _ClassVar[int]
    name: str
    ruleset_digest: str
    def __init__(self, name: _Optional[str] = ..., ruleset_digest: _Optional[str] = ...) -> None: ...

class ScanBytesRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: ScanBytesHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[ScanBytesHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class ScanBytesResponse(_message.Message):
    __slots__ = ("verdict",)
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    verdict: _verdict_pb2.Verdict
    def __init__(self, verdict: _Optional[_Union[_verdict_pb2.Verdict, _Mapping]] = ...) -> None: ...
