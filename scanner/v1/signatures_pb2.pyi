import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DiagnosticSeverity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DIAGNOSTIC_SEVERITY_UNSPECIFIED: _ClassVar[DiagnosticSeverity]
    DIAGNOSTIC_SEVERITY_ERROR: _ClassVar[DiagnosticSeverity]
    DIAGNOSTIC_SEVERITY_WARNING: _ClassVar[DiagnosticSeverity]

class RolloutState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLLOUT_STATE_UNSPECIFIED: _ClassVar[RolloutState]
    ROLLOUT_STATE_CURRENT: _ClassVar[RolloutState]
    ROLLOUT_STATE_LAGGING: _ClassVar[RolloutState]
    ROLLOUT_STATE_FAILED: _ClassVar[RolloutState]
    ROLLOUT_STATE_UNKNOWN: _ClassVar[RolloutState]
DIAGNOSTIC_SEVERITY_UNSPECIFIED: DiagnosticSeverity
DIAGNOSTIC_SEVERITY_ERROR: DiagnosticSeverity
DIAGNOSTIC_SEVERITY_WARNING: DiagnosticSeverity
ROLLOUT_STATE_UNSPECIFIED: RolloutState
ROLLOUT_STATE_CURRENT: RolloutState
ROLLOUT_STATE_LAGGING: RolloutState
ROLLOUT_STATE_FAILED: RolloutState
ROLLOUT_STATE_UNKNOWN: RolloutState

class Diagnostic(_message.Message):
    __slots__ = ("severity", "file", "line", "message", "slow_pattern")
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SLOW_PATTERN_FIELD_NUMBER: _ClassVar[int]
    severity: DiagnosticSeverity
    file: str
    line: int
    message: str
    slow_pattern: bool
    def __init__(self, severity: _Optional[_Union[DiagnosticSeverity, str]] = ..., file: _Optional[str] = ..., line: _Optional[int] = ..., message: _Optional[str] = ..., slow_pattern: _Optional[bool] = ...) -> None: ...

class Ruleset(_message.Message):
    __slots__ = ("digest", "version", "name", "description", "pushed_by", "pushed_at", "rule_count", "file_count", "size_bytes", "warnings", "active", "signature")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PUSHED_BY_FIELD_NUMBER: _ClassVar[int]
    PUSHED_AT_FIELD_NUMBER: _ClassVar[int]
    RULE_COUNT_FIELD_NUMBER: _ClassVar[int]
    FILE_COUNT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    digest: str
    version: int
    name: str
    description: str
    pushed_by: str
    pushed_at: _timestamp_pb2.Timestamp
    rule_count: int
    file_count: int
    size_bytes: int
    warnings: _containers.RepeatedCompositeFieldContainer[Diagnostic]
    active: bool
    signature: BundleSignature
    def __init__(self, digest: _Optional[str] = ..., version: _Optional[int] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., pushed_by: _Optional[str] = ..., pushed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., rule_count: _Optional[int] = ..., file_count: _Optional[int] = ..., size_bytes: _Optional[int] = ..., warnings: _Optional[_Iterable[_Union[Diagnostic, _Mapping]]] = ..., active: _Optional[bool] = ..., signature: _Optional[_Union[BundleSignature, _Mapping]] = ...) -> None: ...

class RulesetHeader(_message.Message):
    __slots__ = ("name", "description", "force_slow_rules", "signature", "allow_rollback")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    FORCE_SLOW_RULES_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    ALLOW_ROLLBACK_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    force_slow_rules: bool
    signature: BundleSignature
    allow_rollback: bool
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., force_slow_rules: _Optional[bool] = ..., signature: _Optional[_Union[BundleSignature, _Mapping]] = ..., allow_rollback: _Optional[bool] = ...) -> None: ...

class BundleSignature(_message.Message):
    __slots__ = ("key_id", "bundle_version", "signature")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    bundle_version: int
    signature: bytes
    def __init__(self, key_id: _Optional[str] = ..., bundle_version: _Optional[int] = ..., signature: _Optional[bytes] = ...) -> None: ...

class RuleFileChunk(_message.Message):
    __slots__ = ("path", "data")
    PATH_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    path: str
    data: bytes
    def __init__(self, path: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class PushRulesetRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: RulesetHeader
    chunk: RuleFileChunk
    def __init__(self, header: _Optional[_Union[RulesetHeader, _Mapping]] = ..., chunk: _Optional[_Union[RuleFileChunk, _Mapping]] = ...) -> None: ...

class PushRulesetResponse(_message.Message):
    __slots__ = ("ruleset", "diagnostics")
    RULESET_FIELD_NUMBER: _ClassVar[int]
    DIAGNOSTICS_FIELD_NUMBER: _ClassVar[int]
    ruleset: Ruleset
    diagnostics: _containers.RepeatedCompositeFieldContainer[Diagnostic]
    def __init__(self, ruleset: _Optional[_Union[Ruleset, _Mapping]] = ..., diagnostics: _Optional[_Iterable[_Union[Diagnostic, _Mapping]]] = ...) -> None: ...

class ValidateRulesetRequest(_message.Message):
    __slots__ = ("chunk",)
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    chunk: RuleFileChunk
    def __init__(self, chunk: _Optional[_Union[RuleFileChunk, _Mapping]] = ...) -> None: ...

class ValidateRulesetResponse(_message.Message):
    __slots__ = ("ok", "diagnostics", "digest")
    OK_FIELD_NUMBER: _ClassVar[int]
    DIAGNOSTICS_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    diagnostics: _containers.RepeatedCompositeFieldContainer[Diagnostic]
    digest: str
    def __init__(self, ok: _Optional[bool] = ..., diagnostics: _Optional[_Iterable[_Union[Diagnostic, _Mapping]]] = ..., digest: _Optional[str] = ...) -> None: ...

class ActivateRulesetRequest(_message.Message):
    __slots__ = ("digest", "version", "allow_rollback")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ALLOW_ROLLBACK_FIELD_NUMBER: _ClassVar[int]
    digest: str
    version: int
    allow_rollback: bool
    def __init__(self, digest: _Optional[str] = ..., version: _Optional[int] = ..., allow_rollback: _Optional[bool] = ...) -> None: ...

class ActivateRulesetResponse(_message.Message):
    __slots__ = ("ruleset",)
    RULESET_FIELD_NUMBER: _ClassVar[int]
    ruleset: Ruleset
    def __init__(self, ruleset: _Optional[_Union[Ruleset, _Mapping]] = ...) -> None: ...

class RollbackRulesetRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RollbackRulesetResponse(_message.Message):
    __slots__ = ("ruleset",)
    RULESET_FIELD_NUMBER: _ClassVar[int]
    ruleset: Ruleset
    def __init__(self, ruleset: _Optional[_Union[Ruleset, _Mapping]] = ...) -> None: ...

class ListRulesetsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRulesetsResponse(_message.Message):
    __slots__ = ("rulesets", "next_page_token")
    RULESETS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    rulesets: _containers.RepeatedCompositeFieldContainer[Ruleset]
    next_page_token: str
    def __init__(self, rulesets: _Optional[_Iterable[_Union[Ruleset, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetRulesetRolloutRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ApplianceRuleset(_message.Message):
    __slots__ = ("appliance", "host", "running_digest", "wanted_digest", "state", "error", "updated_at")
    APPLIANCE_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    RUNNING_DIGEST_FIELD_NUMBER: _ClassVar[int]
    WANTED_DIGEST_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    appliance: str
    host: str
    running_digest: str
    wanted_digest: str
    state: RolloutState
    error: str
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, appliance: _Optional[str] = ..., host: _Optional[str] = ..., running_digest: _Optional[str] = ..., wanted_digest: _Optional[str] = ..., state: _Optional[_Union[RolloutState, str]] = ..., error: _Optional[str] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetRulesetRolloutResponse(_message.Message):
    __slots__ = ("active_digest", "active_version", "appliances")
    ACTIVE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    APPLIANCES_FIELD_NUMBER: _ClassVar[int]
    active_digest: str
    active_version: int
    appliances: _containers.RepeatedCompositeFieldContainer[ApplianceRuleset]
    def __init__(self, active_digest: _Optional[str] = ..., active_version: _Optional[int] = ..., appliances: _Optional[_Iterable[_Union[ApplianceRuleset, _Mapping]]] = ...) -> None: ...
