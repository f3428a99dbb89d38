from impasto.runtime.api import studio_pb2 as _studio_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RenderJob(_message.Message):
    __slots__ = ("request", "max_side")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    MAX_SIDE_FIELD_NUMBER: _ClassVar[int]
    request: _studio_pb2.RenderRequest
    max_side: int
    def __init__(self, request: _Optional[_Union[_studio_pb2.RenderRequest, _Mapping]] = ..., max_side: _Optional[int] = ...) -> None: ...

class RunRequest(_message.Message):
    __slots__ = ("job_id", "request", "max_side", "preview_interval_ms", "progress_interval_ms")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    MAX_SIDE_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    request: _studio_pb2.OpRequest
    max_side: int
    preview_interval_ms: int
    progress_interval_ms: int
    def __init__(self, job_id: _Optional[str] = ..., request: _Optional[_Union[_studio_pb2.OpRequest, _Mapping]] = ..., max_side: _Optional[int] = ..., preview_interval_ms: _Optional[int] = ..., progress_interval_ms: _Optional[int] = ...) -> None: ...

class CancelRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelReply(_message.Message):
    __slots__ = ("found",)
    FOUND_FIELD_NUMBER: _ClassVar[int]
    found: bool
    def __init__(self, found: bool = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusReply(_message.Message):
    __slots__ = ("pid", "device", "slots", "running")
    PID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    pid: int
    device: str
    slots: int
    running: int
    def __init__(self, pid: _Optional[int] = ..., device: _Optional[str] = ..., slots: _Optional[int] = ..., running: _Optional[int] = ...) -> None: ...
