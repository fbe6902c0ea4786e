import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
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
    __slots__ = ()
    def __init__(self) -> None: ...

class ListVMsResponse(_message.Message):
    __slots__ = ("vms",)
    VMS_FIELD_NUMBER: _ClassVar[int]
    vms: _containers.RepeatedCompositeFieldContainer[VM]
    def __init__(self, vms: _Optional[_Iterable[_Union[VM, _Mapping]]] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "reason", "vm_uuid", "vm_name", "state", "verdict", "severity", "scan_ids", "notes", "created_at")
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
    def __init__(self, job_id: _Optional[str] = ..., reason: _Optional[str] = ..., vm_uuid: _Optional[str] = ..., vm_name: _Optional[str] = ..., state: _Optional[str] = ..., verdict: _Optional[str] = ..., severity: _Optional[int] = ..., scan_ids: _Optional[_Iterable[str]] = ..., notes: _Optional[_Iterable[str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

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
    __slots__ = ("page_size",)
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    def __init__(self, page_size: _Optional[int] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class Action(_message.Message):
    __slots__ = ("seq", "job_id", "vm_uuid", "vm_name", "kind", "state", "attempts", "last_error", "result", "created_at")
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
    def __init__(self, seq: _Optional[int] = ..., job_id: _Optional[str] = ..., vm_uuid: _Optional[str] = ..., vm_name: _Optional[str] = ..., kind: _Optional[str] = ..., state: _Optional[_Union[ActionState, str]] = ..., attempts: _Optional[int] = ..., last_error: _Optional[str] = ..., result: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListActionsRequest(_message.Message):
    __slots__ = ("vm_uuid", "page_size")
    VM_UUID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    vm_uuid: str
    page_size: int
    def __init__(self, vm_uuid: _Optional[str] = ..., page_size: _Optional[int] = ...) -> None: ...

class ListActionsResponse(_message.Message):
    __slots__ = ("actions",)
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    actions: _containers.RepeatedCompositeFieldContainer[Action]
    def __init__(self, actions: _Optional[_Iterable[_Union[Action, _Mapping]]] = ...) -> None: ...

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
