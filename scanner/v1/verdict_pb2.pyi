import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VerdictKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERDICT_KIND_UNSPECIFIED: _ClassVar[VerdictKind]
    VERDICT_KIND_CLEAN: _ClassVar[VerdictKind]
    VERDICT_KIND_MALICIOUS: _ClassVar[VerdictKind]
    VERDICT_KIND_SUSPICIOUS: _ClassVar[VerdictKind]
    VERDICT_KIND_INCOMPLETE: _ClassVar[VerdictKind]
    VERDICT_KIND_ERROR: _ClassVar[VerdictKind]

class GapKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GAP_KIND_UNSPECIFIED: _ClassVar[GapKind]
    GAP_KIND_UNREADABLE: _ClassVar[GapKind]
    GAP_KIND_TIMEOUT: _ClassVar[GapKind]
    GAP_KIND_TOO_MANY_MATCHES: _ClassVar[GapKind]
    GAP_KIND_SKIPPED_POLICY: _ClassVar[GapKind]
    GAP_KIND_SKIPPED_LIMIT: _ClassVar[GapKind]
    GAP_KIND_CANCELLED: _ClassVar[GapKind]
    GAP_KIND_FAILED: _ClassVar[GapKind]
VERDICT_KIND_UNSPECIFIED: VerdictKind
VERDICT_KIND_CLEAN: VerdictKind
VERDICT_KIND_MALICIOUS: VerdictKind
VERDICT_KIND_SUSPICIOUS: VerdictKind
VERDICT_KIND_INCOMPLETE: VerdictKind
VERDICT_KIND_ERROR: VerdictKind
GAP_KIND_UNSPECIFIED: GapKind
GAP_KIND_UNREADABLE: GapKind
GAP_KIND_TIMEOUT: GapKind
GAP_KIND_TOO_MANY_MATCHES: GapKind
GAP_KIND_SKIPPED_POLICY: GapKind
GAP_KIND_SKIPPED_LIMIT: GapKind
GAP_KIND_CANCELLED: GapKind
GAP_KIND_FAILED: GapKind

class Gap(_message.Message):
    __slots__ = ("kind", "unit", "detail", "offset", "length")
    KIND_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    kind: GapKind
    unit: str
    detail: str
    offset: int
    length: int
    def __init__(self, kind: _Optional[_Union[GapKind, str]] = ..., unit: _Optional[str] = ..., detail: _Optional[str] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ...) -> None: ...

class Coverage(_message.Message):
    __slots__ = ("bytes_total", "bytes_scanned", "bytes_skipped", "bytes_unreadable", "units_total", "units_scanned", "units_skipped", "units_failed", "gaps", "gaps_truncated", "complete", "cache_hits", "cache_misses", "bytes_zero", "accounting")
    class AccountingEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    BYTES_SCANNED_FIELD_NUMBER: _ClassVar[int]
    BYTES_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    BYTES_UNREADABLE_FIELD_NUMBER: _ClassVar[int]
    UNITS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    UNITS_SCANNED_FIELD_NUMBER: _ClassVar[int]
    UNITS_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    UNITS_FAILED_FIELD_NUMBER: _ClassVar[int]
    GAPS_FIELD_NUMBER: _ClassVar[int]
    GAPS_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    CACHE_HITS_FIELD_NUMBER: _ClassVar[int]
    CACHE_MISSES_FIELD_NUMBER: _ClassVar[int]
    BYTES_ZERO_FIELD_NUMBER: _ClassVar[int]
    ACCOUNTING_FIELD_NUMBER: _ClassVar[int]
    bytes_total: int
    bytes_scanned: int
    bytes_skipped: int
    bytes_unreadable: int
    units_total: int
    units_scanned: int
    units_skipped: int
    units_failed: int
    gaps: _containers.RepeatedCompositeFieldContainer[Gap]
    gaps_truncated: int
    complete: bool
    cache_hits: int
    cache_misses: int
    bytes_zero: int
    accounting: _containers.ScalarMap[str, int]
    def __init__(self, bytes_total: _Optional[int] = ..., bytes_scanned: _Optional[int] = ..., bytes_skipped: _Optional[int] = ..., bytes_unreadable: _Optional[int] = ..., units_total: _Optional[int] = ..., units_scanned: _Optional[int] = ..., units_skipped: _Optional[int] = ..., units_failed: _Optional[int] = ..., gaps: _Optional[_Iterable[_Union[Gap, _Mapping]]] = ..., gaps_truncated: _Optional[int] = ..., complete: _Optional[bool] = ..., cache_hits: _Optional[int] = ..., cache_misses: _Optional[int] = ..., bytes_zero: _Optional[int] = ..., accounting: _Optional[_Mapping[str, int]] = ...) -> None: ...

class StringMatch(_message.Message):
    __slots__ = ("identifier", "offset", "address", "length", "data", "physical_address")
    IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    PHYSICAL_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    identifier: str
    offset: int
    address: int
    length: int
    data: bytes
    physical_address: int
    def __init__(self, identifier: _Optional[str] = ..., offset: _Optional[int] = ..., address: _Optional[int] = ..., length: _Optional[int] = ..., data: _Optional[bytes] = ..., physical_address: _Optional[int] = ...) -> None: ...

class MetaValue(_message.Message):
    __slots__ = ("string_value", "int_value", "bool_value")
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    string_value: str
    int_value: int
    bool_value: bool
    def __init__(self, string_value: _Optional[str] = ..., int_value: _Optional[int] = ..., bool_value: _Optional[bool] = ...) -> None: ...

class Finding(_message.Message):
    __slots__ = ("rule", "namespace", "tags", "meta", "unit", "unit_kind", "offset", "address", "strings", "strings_truncated", "context", "severity")
    class MetaEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: MetaValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[MetaValue, _Mapping]] = ...) -> None: ...
    class ContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RULE_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    UNIT_KIND_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STRINGS_FIELD_NUMBER: _ClassVar[int]
    STRINGS_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    rule: str
    namespace: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    meta: _containers.MessageMap[str, MetaValue]
    unit: str
    unit_kind: str
    offset: int
    address: int
    strings: _containers.RepeatedCompositeFieldContainer[StringMatch]
    strings_truncated: bool
    context: _containers.ScalarMap[str, str]
    severity: int
    def __init__(self, rule: _Optional[str] = ..., namespace: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., meta: _Optional[_Mapping[str, MetaValue]] = ..., unit: _Optional[str] = ..., unit_kind: _Optional[str] = ..., offset: _Optional[int] = ..., address: _Optional[int] = ..., strings: _Optional[_Iterable[_Union[StringMatch, _Mapping]]] = ..., strings_truncated: _Optional[bool] = ..., context: _Optional[_Mapping[str, str]] = ..., severity: _Optional[int] = ...) -> None: ...

class Verdict(_message.Message):
    __slots__ = ("kind", "ruleset_digest", "coverage", "findings", "error", "reason", "started_at", "finished_at", "details", "findings_count")
    class DetailsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KIND_FIELD_NUMBER: _ClassVar[int]
    RULESET_DIGEST_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    FINDINGS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    FINDINGS_COUNT_FIELD_NUMBER: _ClassVar[int]
    kind: VerdictKind
    ruleset_digest: str
    coverage: Coverage
    findings: _containers.RepeatedCompositeFieldContainer[Finding]
    error: str
    reason: str
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    details: _containers.ScalarMap[str, str]
    findings_count: int
    def __init__(self, kind: _Optional[_Union[VerdictKind, str]] = ..., ruleset_digest: _Optional[str] = ..., coverage: _Optional[_Union[Coverage, _Mapping]] = ..., findings: _Optional[_Iterable[_Union[Finding, _Mapping]]] = ..., error: _Optional[str] = ..., reason: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., details: _Optional[_Mapping[str, str]] = ..., findings_count: _Optional[int] = ...) -> None: ...
