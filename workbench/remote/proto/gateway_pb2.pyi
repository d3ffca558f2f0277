from workbench.remote.proto import worker_pb2 as _worker_pb2
from workbench.remote.proto import ops_pb2 as _ops_pb2
from google.protobuf import any_pb2 as _any_pb2
from workbench.remote.session.proto import fsutil_types_pb2 as _fsutil_types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RPCStatus(_message.Message):
    __slots__ = ("code", "message", "details")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    details: _containers.RepeatedCompositeFieldContainer[_any_pb2.Any]
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., details: _Optional[_Iterable[_Union[_any_pb2.Any, _Mapping]]] = ...) -> None: ...

class APICap(_message.Message):
    __slots__ = ("ID", "Enabled", "Deprecated", "DisabledReason", "DisabledReasonMsg", "DisabledAlternative")
    ID_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    DEPRECATED_FIELD_NUMBER: _ClassVar[int]
    DISABLEDREASON_FIELD_NUMBER: _ClassVar[int]
    DISABLEDREASONMSG_FIELD_NUMBER: _ClassVar[int]
    DISABLEDALTERNATIVE_FIELD_NUMBER: _ClassVar[int]
    ID: str
    Enabled: bool
    Deprecated: bool
    DisabledReason: str
    DisabledReasonMsg: str
    DisabledAlternative: str
    def __init__(self, ID: _Optional[str] = ..., Enabled: _Optional[bool] = ..., Deprecated: _Optional[bool] = ..., DisabledReason: _Optional[str] = ..., DisabledReasonMsg: _Optional[str] = ..., DisabledAlternative: _Optional[str] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("refDeprecated", "refsDeprecated", "ref", "refs", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    REFDEPRECATED_FIELD_NUMBER: _ClassVar[int]
    REFSDEPRECATED_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    REFS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    refDeprecated: str
    refsDeprecated: RefMapDeprecated
    ref: Ref
    refs: RefMap
    metadata: _containers.ScalarMap[str, bytes]
    def __init__(self, refDeprecated: _Optional[str] = ..., refsDeprecated: _Optional[_Union[RefMapDeprecated, _Mapping]] = ..., ref: _Optional[_Union[Ref, _Mapping]] = ..., refs: _Optional[_Union[RefMap, _Mapping]] = ..., metadata: _Optional[_Mapping[str, bytes]] = ...) -> None: ...

class RefMapDeprecated(_message.Message):
    __slots__ = ("refs",)
    class RefsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REFS_FIELD_NUMBER: _ClassVar[int]
    refs: _containers.ScalarMap[str, str]
    def __init__(self, refs: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Ref(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    DEF_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ..., **kwargs) -> None: ...

class RefMap(_message.Message):
    __slots__ = ("refs",)
    class RefsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Ref
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Ref, _Mapping]] = ...) -> None: ...
    REFS_FIELD_NUMBER: _ClassVar[int]
    refs: _containers.MessageMap[str, Ref]
    def __init__(self, refs: _Optional[_Mapping[str, Ref]] = ...) -> None: ...

class ReturnRequest(_message.Message):
    __slots__ = ("result", "error")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    result: Result
    error: RPCStatus
    def __init__(self, result: _Optional[_Union[Result, _Mapping]] = ..., error: _Optional[_Union[RPCStatus, _Mapping]] = ...) -> None: ...

class ReturnResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SolveRequest(_message.Message):
    __slots__ = ("Definition", "Frontend", "FrontendOpt", "allowResultReturn", "allowResultArrayRef", "Final", "ExporterAttr", "Evaluate")
    class FrontendOptEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    FRONTEND_FIELD_NUMBER: _ClassVar[int]
    FRONTENDOPT_FIELD_NUMBER: _ClassVar[int]
    ALLOWRESULTRETURN_FIELD_NUMBER: _ClassVar[int]
    ALLOWRESULTARRAYREF_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    EXPORTERATTR_FIELD_NUMBER: _ClassVar[int]
    EVALUATE_FIELD_NUMBER: _ClassVar[int]
    Definition: _ops_pb2.Definition
    Frontend: str
    FrontendOpt: _containers.ScalarMap[str, str]
    allowResultReturn: bool
    allowResultArrayRef: bool
    Final: bool
    ExporterAttr: bytes
    Evaluate: bool
    def __init__(self, Definition: _Optional[_Union[_ops_pb2.Definition, _Mapping]] = ..., Frontend: _Optional[str] = ..., FrontendOpt: _Optional[_Mapping[str, str]] = ..., allowResultReturn: _Optional[bool] = ..., allowResultArrayRef: _Optional[bool] = ..., Final: _Optional[bool] = ..., ExporterAttr: _Optional[bytes] = ..., Evaluate: _Optional[bool] = ...) -> None: ...

class SolveResponse(_message.Message):
    __slots__ = ("ref", "result")
    REF_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ref: str
    result: Result
    def __init__(self, ref: _Optional[str] = ..., result: _Optional[_Union[Result, _Mapping]] = ...) -> None: ...

class PingRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PongResponse(_message.Message):
    __slots__ = ("FrontendAPICaps", "LLBCaps", "Workers")
    FRONTENDAPICAPS_FIELD_NUMBER: _ClassVar[int]
    LLBCAPS_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    FrontendAPICaps: _containers.RepeatedCompositeFieldContainer[APICap]
    LLBCaps: _containers.RepeatedCompositeFieldContainer[APICap]
    Workers: _containers.RepeatedCompositeFieldContainer[_worker_pb2.WorkerRecord]
    def __init__(self, FrontendAPICaps: _Optional[_Iterable[_Union[APICap, _Mapping]]] = ..., LLBCaps: _Optional[_Iterable[_Union[APICap, _Mapping]]] = ..., Workers: _Optional[_Iterable[_Union[_worker_pb2.WorkerRecord, _Mapping]]] = ...) -> None: ...

class NewContainerRequest(_message.Message):
    __slots__ = ("ContainerID", "Mounts", "Network", "platform", "constraints", "extraHosts", "hostname")
    CONTAINERID_FIELD_NUMBER: _ClassVar[int]
    MOUNTS_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    EXTRAHOSTS_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    ContainerID: str
    Mounts: _containers.RepeatedCompositeFieldContainer[_ops_pb2.Mount]
    Network: _ops_pb2.NetMode
    platform: _ops_pb2.Platform
    constraints: _ops_pb2.WorkerConstraints
    extraHosts: _containers.RepeatedCompositeFieldContainer[_ops_pb2.HostIP]
    hostname: str
    def __init__(self, ContainerID: _Optional[str] = ..., Mounts: _Optional[_Iterable[_Union[_ops_pb2.Mount, _Mapping]]] = ..., Network: _Optional[_Union[_ops_pb2.NetMode, str]] = ..., platform: _Optional[_Union[_ops_pb2.Platform, _Mapping]] = ..., constraints: _Optional[_Union[_ops_pb2.WorkerConstraints, _Mapping]] = ..., extraHosts: _Optional[_Iterable[_Union[_ops_pb2.HostIP, _Mapping]]] = ..., hostname: _Optional[str] = ...) -> None: ...

class NewContainerResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReleaseContainerRequest(_message.Message):
    __slots__ = ("ContainerID",)
    CONTAINERID_FIELD_NUMBER: _ClassVar[int]
    ContainerID: str
    def __init__(self, ContainerID: _Optional[str] = ...) -> None: ...

class ReleaseContainerResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ExecMessage(_message.Message):
    __slots__ = ("ProcessID", "Init", "File", "Resize", "Started", "Exit", "Done", "Signal")
    PROCESSID_FIELD_NUMBER: _ClassVar[int]
    INIT_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    RESIZE_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    EXIT_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    ProcessID: str
    Init: InitMessage
    File: FdMessage
    Resize: ResizeMessage
    Started: StartedMessage
    Exit: ExitMessage
    Done: DoneMessage
    Signal: SignalMessage
    def __init__(self, ProcessID: _Optional[str] = ..., Init: _Optional[_Union[InitMessage, _Mapping]] = ..., File: _Optional[_Union[FdMessage, _Mapping]] = ..., Resize: _Optional[_Union[ResizeMessage, _Mapping]] = ..., Started: _Optional[_Union[StartedMessage, _Mapping]] = ..., Exit: _Optional[_Union[ExitMessage, _Mapping]] = ..., Done: _Optional[_Union[DoneMessage, _Mapping]] = ..., Signal: _Optional[_Union[SignalMessage, _Mapping]] = ...) -> None: ...

class InitMessage(_message.Message):
    __slots__ = ("ContainerID", "Meta", "Fds", "Tty", "Security", "secretenv")
    CONTAINERID_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    FDS_FIELD_NUMBER: _ClassVar[int]
    TTY_FIELD_NUMBER: _ClassVar[int]
    SECURITY_FIELD_NUMBER: _ClassVar[int]
    SECRETENV_FIELD_NUMBER: _ClassVar[int]
    ContainerID: str
    Meta: _ops_pb2.Meta
    Fds: _containers.RepeatedScalarFieldContainer[int]
    Tty: bool
    Security: _ops_pb2.SecurityMode
    secretenv: _containers.RepeatedCompositeFieldContainer[_ops_pb2.SecretEnv]
    def __init__(self, ContainerID: _Optional[str] = ..., Meta: _Optional[_Union[_ops_pb2.Meta, _Mapping]] = ..., Fds: _Optional[_Iterable[int]] = ..., Tty: _Optional[bool] = ..., Security: _Optional[_Union[_ops_pb2.SecurityMode, str]] = ..., secretenv: _Optional[_Iterable[_Union[_ops_pb2.SecretEnv, _Mapping]]] = ...) -> None: ...

class ExitMessage(_message.Message):
    __slots__ = ("Code", "Error")
    CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    Code: int
    Error: RPCStatus
    def __init__(self, Code: _Optional[int] = ..., Error: _Optional[_Union[RPCStatus, _Mapping]] = ...) -> None: ...

class StartedMessage(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DoneMessage(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FdMessage(_message.Message):
    __slots__ = ("Fd", "EOF", "Data")
    FD_FIELD_NUMBER: _ClassVar[int]
    EOF_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    Fd: int
    EOF: bool
    Data: bytes
    def __init__(self, Fd: _Optional[int] = ..., EOF: _Optional[bool] = ..., Data: _Optional[bytes] = ...) -> None: ...

class ResizeMessage(_message.Message):
    __slots__ = ("Rows", "Cols")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    COLS_FIELD_NUMBER: _ClassVar[int]
    Rows: int
    Cols: int
    def __init__(self, Rows: _Optional[int] = ..., Cols: _Optional[int] = ...) -> None: ...

class SignalMessage(_message.Message):
    __slots__ = ("Name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    Name: str
    def __init__(self, Name: _Optional[str] = ...) -> None: ...

class ReadDirRequest(_message.Message):
    __slots__ = ("Ref", "DirPath", "IncludePattern")
    REF_FIELD_NUMBER: _ClassVar[int]
    DIRPATH_FIELD_NUMBER: _ClassVar[int]
    INCLUDEPATTERN_FIELD_NUMBER: _ClassVar[int]
    Ref: str
    DirPath: str
    IncludePattern: str
    def __init__(self, Ref: _Optional[str] = ..., DirPath: _Optional[str] = ..., IncludePattern: _Optional[str] = ...) -> None: ...

class ReadDirResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[_fsutil_types_pb2.Stat]
    def __init__(self, entries: _Optional[_Iterable[_Union[_fsutil_types_pb2.Stat, _Mapping]]] = ...) -> None: ...

class StatFileRequest(_message.Message):
    __slots__ = ("Ref", "Path")
    REF_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    Ref: str
    Path: str
    def __init__(self, Ref: _Optional[str] = ..., Path: _Optional[str] = ...) -> None: ...

class StatFileResponse(_message.Message):
    __slots__ = ("stat",)
    STAT_FIELD_NUMBER: _ClassVar[int]
    stat: _fsutil_types_pb2.Stat
    def __init__(self, stat: _Optional[_Union[_fsutil_types_pb2.Stat, _Mapping]] = ...) -> None: ...
