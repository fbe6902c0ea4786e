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

class PowerState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POWER_STATE_UNSPECIFIED: _ClassVar[PowerState]
    POWER_STATE_ON: _ClassVar[PowerState]
    POWER_STATE_OFF: _ClassVar[PowerState]
    POWER_STATE_SUSPENDED: _ClassVar[PowerState]

class ActionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTION_STATE_UNSPECIFIED: _ClassVar[ActionState]
    ACTION_STATE_PENDING: _ClassVar[ActionState]
    ACTION_STATE_DONE: _ClassVar[ActionState]
    ACTION_STATE_DRY_RUN: _ClassVar[ActionState]
    ACTION_STATE_ABANDONED: _ClassVar[ActionState]
    ACTION_STATE_REVERTED: _ClassVar[ActionState]
    ACTION_STATE_FAILED: _ClassVar[ActionState]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_ACQUIRING: _ClassVar[JobState]
    JOB_STATE_SCANNING: _ClassVar[JobState]
    JOB_STATE_PUBLISHING: _ClassVar[JobState]
    JOB_STATE_DONE: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]

class TriggerReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRIGGER_REASON_UNSPECIFIED: _ClassVar[TriggerReason]
    TRIGGER_REASON_POWER_ON: _ClassVar[TriggerReason]
    TRIGGER_REASON_MIGRATE: _ClassVar[TriggerReason]
    TRIGGER_REASON_ATTRIBUTE: _ClassVar[TriggerReason]
    TRIGGER_REASON_API: _ClassVar[TriggerReason]

class ActionKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTION_KIND_UNSPECIFIED: _ClassVar[ActionKind]
    ACTION_KIND_REQUEST_ACK: _ClassVar[ActionKind]
    ACTION_KIND_ATTRIBUTES: _ClassVar[ActionKind]
    ACTION_KIND_EVENT: _ClassVar[ActionKind]
    ACTION_KIND_TAG: _ClassVar[ActionKind]
    ACTION_KIND_DISCONNECT: _ClassVar[ActionKind]
    ACTION_KIND_SNAPSHOT: _ClassVar[ActionKind]
    ACTION_KIND_SUSPEND: _ClassVar[ActionKind]
    ACTION_KIND_RELEASE_ATTRIBUTES: _ClassVar[ActionKind]
    ACTION_KIND_UNTAG: _ClassVar[ActionKind]
    ACTION_KIND_RESTORE_NETWORK: _ClassVar[ActionKind]
    ACTION_KIND_RESUME: _ClassVar[ActionKind]
    ACTION_KIND_RELEASE_EVENT: _ClassVar[ActionKind]
POWER_STATE_UNSPECIFIED: PowerState
POWER_STATE_ON: PowerState
POWER_STATE_OFF: PowerState
POWER_STATE_SUSPENDED: PowerState
ACTION_STATE_UNSPECIFIED: ActionState
ACTION_STATE_PENDING: ActionState
ACTION_STATE_DONE: ActionState
ACTION_STATE_DRY_RUN: ActionState
ACTION_STATE_ABANDONED: ActionState
ACTION_STATE_REVERTED: ActionState
ACTION_STATE_FAILED: ActionState
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_ACQUIRING: JobState
JOB_STATE_SCANNING: JobState
JOB_STATE_PUBLISHING: JobState
JOB_STATE_DONE: JobState
JOB_STATE_FAILED: JobState
TRIGGER_REASON_UNSPECIFIED: TriggerReason
TRIGGER_REASON_POWER_ON: TriggerReason
TRIGGER_REASON_MIGRATE: TriggerReason
TRIGGER_REASON_ATTRIBUTE: TriggerReason
TRIGGER_REASON_API: TriggerReason
ACTION_KIND_UNSPECIFIED: ActionKind
ACTION_KIND_REQUEST_ACK: ActionKind
ACTION_KIND_ATTRIBUTES: ActionKind
ACTION_KIND_EVENT: ActionKind
ACTION_KIND_TAG: ActionKind
ACTION_KIND_DISCONNECT: ActionKind
ACTION_KIND_SNAPSHOT: ActionKind
ACTION_KIND_SUSPEND: ActionKind
ACTION_KIND_RELEASE_ATTRIBUTES: ActionKind
ACTION_KIND_UNTAG: ActionKind
ACTION_KIND_RESTORE_NETWORK: ActionKind
ACTION_KIND_RESUME: ActionKind
ACTION_KIND_RELEASE_EVENT: ActionKind

class DatastoreFile(_message.Message):
    __slots__ = ("name", "type", "size")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    size: int
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class VM(_message.Message):
    __slots__ = ("moref", "name", "instance_uuid", "host", "power_state", "guest_os", "vmx", "files", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MOREF_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_UUID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    POWER_STATE_FIELD_NUMBER: _ClassVar[int]
    GUEST_OS_FIELD_NUMBER: _ClassVar[int]
    VMX_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    moref: str
    name: str
    instance_uuid: str
    host: str
    power_state: PowerState
    guest_os: str
    vmx: str
    files: _containers.RepeatedCompositeFieldContainer[DatastoreFile]
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, moref: _Optional[str] = ..., name: _Optional[str] = ..., instance_uuid: _Optional[str] = ..., host: _Optional[str] = ..., power_state: _Optional[_Union[PowerState, str]] = ..., guest_os: _Optional[str] = ..., vmx: _Optional[str] = ..., files: _Optional[_Iterable[_Union[DatastoreFile, _Mapping]]] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ListVMsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListVMsResponse(_message.Message):
    __slots__ = ("vms", "next_page_token")
    VMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    vms: _containers.RepeatedCompositeFieldContainer[VM]
    next_page_token: str
    def __init__(self, vms: _Optional[_Iterable[_Union[VM, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "reason", "vm_uuid", "vm_name", "state", "verdict", "severity", "scan_ids", "notes", "created_at", "job_state", "verdict_kind", "trigger")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    VM_UUID_FIELD_NUMBER: _ClassVar[int]
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    SCAN_IDS_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    JOB_STATE_FIELD_NUMBER: _ClassVar[int]
    VERDICT_KIND_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    reason: str
    vm_uuid: str
    vm_name: str
    state: str
    verdict: str
    severity: int
    scan_ids: _containers.RepeatedScalarFieldContainer[str]
    notes: _containers.RepeatedScalarFieldContainer[str]
    created_at: _timestamp_pb2.Timestamp
    job_state: JobState
    verdict_kind: _verdict_pb2.VerdictKind
    trigger: TriggerReason
    def __init__(self, job_id: _Optional[str] = ..., reason: _Optional[str] = ..., vm_uuid: _Optional[str] = ..., vm_name: _Optional[str] = ..., state: _Optional[str] = ..., verdict: _Optional[str] = ..., severity: _Optional[int] = ..., scan_ids: _Optional[_Iterable[str]] = ..., notes: _Optional[_Iterable[str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., job_state: _Optional[_Union[JobState, str]] = ..., verdict_kind: _Optional[_Union[_verdict_pb2.VerdictKind, str]] = ..., trigger: _Optional[_Union[TriggerReason, str]] = ...) -> None: ...

class ScanVMRequest(_message.Message):
    __slots__ = ("vm_uuid",)
    VM_UUID_FIELD_NUMBER: _ClassVar[int]
    vm_uuid: str
    def __init__(self, vm_uuid: _Optional[str] = ...) -> None: ...

class ScanVMResponse(_message.Message):
    __slots__ = ("job", "coalesced")
    JOB_FIELD_NUMBER: _ClassVar[int]
    COALESCED_FIELD_NUMBER: _ClassVar[int]
    job: Job
    coalesced: bool
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., coalesced: _Optional[bool] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class Action(_message.Message):
    __slots__ = ("seq", "job_id", "vm_uuid", "vm_name", "kind", "state", "attempts", "last_error", "result", "created_at", "action_kind")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    VM_UUID_FIELD_NUMBER: _ClassVar[int]
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    ACTION_KIND_FIELD_NUMBER: _ClassVar[int]
    seq: int
    job_id: str
    vm_uuid: str
    vm_name: str
    kind: str
    state: ActionState
    attempts: int
    last_error: str
    result: str
    created_at: _timestamp_pb2.Timestamp
    action_kind: ActionKind
    def __init__(self, seq: _Optional[int] = ..., job_id: _Optional[str] = ..., vm_uuid: _Optional[str] = ..., vm_name: _Optional[str] = ..., kind: _Optional[str] = ..., state: _Optional[_Union[ActionState, str]] = ..., attempts: _Optional[int] = ..., last_error: _Optional[str] = ..., result: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., action_kind: _Optional[_Union[ActionKind, str]] = ...) -> None: ...

class ListActionsRequest(_message.Message):
    __slots__ = ("vm_uuid", "page_size", "page_token")
    VM_UUID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    vm_uuid: str
    page_size: int
    page_token: str
    def __init__(self, vm_uuid: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListActionsResponse(_message.Message):
    __slots__ = ("actions", "next_page_token")
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    actions: _containers.RepeatedCompositeFieldContainer[Action]
    next_page_token: str
    def __init__(self, actions: _Optional[_Iterable[_Union[Action, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("vm_uuid", "resume", "reason")
    VM_UUID_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    vm_uuid: str
    resume: bool
    reason: str
    def __init__(self, vm_uuid: _Optional[str] = ..., resume: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ("actions",)
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    actions: _containers.RepeatedCompositeFieldContainer[Action]
    def __init__(self, actions: _Optional[_Iterable[_Union[Action, _Mapping]]] = ...) -> None: ...
