from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[DType]
    DTYPE_U8: _ClassVar[DType]
    DTYPE_F16: _ClassVar[DType]
    DTYPE_F32: _ClassVar[DType]

class ChannelOrder(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ORDER_RGB: _ClassVar[ChannelOrder]
    ORDER_BGR: _ClassVar[ChannelOrder]

class Transfer(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRANSFER_SRGB: _ClassVar[Transfer]
    TRANSFER_LINEAR: _ClassVar[Transfer]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    QUEUED: _ClassVar[JobState]
    RUNNING: _ClassVar[JobState]
    SUCCEEDED: _ClassVar[JobState]
    FAILED: _ClassVar[JobState]
    CANCELLED: _ClassVar[JobState]
DTYPE_UNSPECIFIED: DType
DTYPE_U8: DType
DTYPE_F16: DType
DTYPE_F32: DType
ORDER_RGB: ChannelOrder
ORDER_BGR: ChannelOrder
TRANSFER_SRGB: Transfer
TRANSFER_LINEAR: Transfer
JOB_STATE_UNSPECIFIED: JobState
QUEUED: JobState
RUNNING: JobState
SUCCEEDED: JobState
FAILED: JobState
CANCELLED: JobState

class RawImage(_message.Message):
    __slots__ = ("width", "height", "channels", "dtype", "order", "transfer", "bottom_up", "data", "data_ref")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_FIELD_NUMBER: _ClassVar[int]
    BOTTOM_UP_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    DATA_REF_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    channels: int
    dtype: DType
    order: ChannelOrder
    transfer: Transfer
    bottom_up: bool
    data: bytes
    data_ref: str
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ..., channels: _Optional[int] = ..., dtype: _Optional[_Union[DType, str]] = ..., order: _Optional[_Union[ChannelOrder, str]] = ..., transfer: _Optional[_Union[Transfer, str]] = ..., bottom_up: bool = ..., data: _Optional[bytes] = ..., data_ref: _Optional[str] = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("encoded", "raw", "ref")
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    encoded: bytes
    raw: RawImage
    ref: str
    def __init__(self, encoded: _Optional[bytes] = ..., raw: _Optional[_Union[RawImage, _Mapping]] = ..., ref: _Optional[str] = ...) -> None: ...

class OpRequest(_message.Message):
    __slots__ = ("op", "images", "options", "outputs", "preview_interval_ms")
    class ImagesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Image
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Image, _Mapping]] = ...) -> None: ...
    OP_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    op: str
    images: _containers.MessageMap[str, Image]
    options: _struct_pb2.Struct
    outputs: _containers.RepeatedScalarFieldContainer[str]
    preview_interval_ms: int
    def __init__(self, op: _Optional[str] = ..., images: _Optional[_Mapping[str, Image]] = ..., options: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., outputs: _Optional[_Iterable[str]] = ..., preview_interval_ms: _Optional[int] = ...) -> None: ...

class OpResult(_message.Message):
    __slots__ = ("op", "images", "texts", "files", "numbers")
    class ImagesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Image
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Image, _Mapping]] = ...) -> None: ...
    class TextsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class FilesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Image
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Image, _Mapping]] = ...) -> None: ...
    class NumbersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    OP_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    NUMBERS_FIELD_NUMBER: _ClassVar[int]
    op: str
    images: _containers.MessageMap[str, Image]
    texts: _containers.ScalarMap[str, str]
    files: _containers.MessageMap[str, Image]
    numbers: _containers.ScalarMap[str, float]
    def __init__(self, op: _Optional[str] = ..., images: _Optional[_Mapping[str, Image]] = ..., texts: _Optional[_Mapping[str, str]] = ..., files: _Optional[_Mapping[str, Image]] = ..., numbers: _Optional[_Mapping[str, float]] = ...) -> None: ...

class PaintOptions(_message.Message):
    __slots__ = ("brush", "strokes", "levels", "size", "iterations", "lr", "renderer", "patch", "ot_weight", "style_mode", "style_weight", "features", "canvas", "seed")
    BRUSH_FIELD_NUMBER: _ClassVar[int]
    STROKES_FIELD_NUMBER: _ClassVar[int]
    LEVELS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    LR_FIELD_NUMBER: _ClassVar[int]
    RENDERER_FIELD_NUMBER: _ClassVar[int]
    PATCH_FIELD_NUMBER: _ClassVar[int]
    OT_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    STYLE_MODE_FIELD_NUMBER: _ClassVar[int]
    STYLE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    CANVAS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    brush: str
    strokes: int
    levels: int
    size: int
    iterations: int
    lr: float
    renderer: str
    patch: int
    ot_weight: float
    style_mode: str
    style_weight: float
    features: str
    canvas: str
    seed: int
    def __init__(self, brush: _Optional[str] = ..., strokes: _Optional[int] = ..., levels: _Optional[int] = ..., size: _Optional[int] = ..., iterations: _Optional[int] = ..., lr: _Optional[float] = ..., renderer: _Optional[str] = ..., patch: _Optional[int] = ..., ot_weight: _Optional[float] = ..., style_mode: _Optional[str] = ..., style_weight: _Optional[float] = ..., features: _Optional[str] = ..., canvas: _Optional[str] = ..., seed: _Optional[int] = ...) -> None: ...

class PaintRequest(_message.Message):
    __slots__ = ("image", "options", "mask", "style", "canvas_image", "svg", "animation", "preview_interval_ms")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    STYLE_FIELD_NUMBER: _ClassVar[int]
    CANVAS_IMAGE_FIELD_NUMBER: _ClassVar[int]
    SVG_FIELD_NUMBER: _ClassVar[int]
    ANIMATION_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    image: Image
    options: PaintOptions
    mask: Image
    style: Image
    canvas_image: Image
    svg: bool
    animation: bool
    preview_interval_ms: int
    def __init__(self, image: _Optional[_Union[Image, _Mapping]] = ..., options: _Optional[_Union[PaintOptions, _Mapping]] = ..., mask: _Optional[_Union[Image, _Mapping]] = ..., style: _Optional[_Union[Image, _Mapping]] = ..., canvas_image: _Optional[_Union[Image, _Mapping]] = ..., svg: bool = ..., animation: bool = ..., preview_interval_ms: _Optional[int] = ...) -> None: ...

class PaintResult(_message.Message):
    __slots__ = ("image", "strokes_json", "svg", "animation", "width", "height", "strokes", "seconds")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    STROKES_JSON_FIELD_NUMBER: _ClassVar[int]
    SVG_FIELD_NUMBER: _ClassVar[int]
    ANIMATION_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    STROKES_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    image: Image
    strokes_json: str
    svg: str
    animation: Image
    width: int
    height: int
    strokes: int
    seconds: float
    def __init__(self, image: _Optional[_Union[Image, _Mapping]] = ..., strokes_json: _Optional[str] = ..., svg: _Optional[str] = ..., animation: _Optional[_Union[Image, _Mapping]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., strokes: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...

class SynthesisOptions(_message.Message):
    __slots__ = ("loss", "iterations", "scales", "lr", "content_weight", "tv_weight", "features", "seed", "optimizer", "fine_iterations", "fine_layers")
    LOSS_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    SCALES_FIELD_NUMBER: _ClassVar[int]
    LR_FIELD_NUMBER: _ClassVar[int]
    CONTENT_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    TV_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    FINE_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    FINE_LAYERS_FIELD_NUMBER: _ClassVar[int]
    loss: str
    iterations: int
    scales: int
    lr: float
    content_weight: float
    tv_weight: float
    features: str
    seed: int
    optimizer: str
    fine_iterations: int
    fine_layers: str
    def __init__(self, loss: _Optional[str] = ..., iterations: _Optional[int] = ..., scales: _Optional[int] = ..., lr: _Optional[float] = ..., content_weight: _Optional[float] = ..., tv_weight: _Optional[float] = ..., features: _Optional[str] = ..., seed: _Optional[int] = ..., optimizer: _Optional[str] = ..., fine_iterations: _Optional[int] = ..., fine_layers: _Optional[str] = ...) -> None: ...

class TextureRequest(_message.Message):
    __slots__ = ("exemplar", "width", "height", "tileable", "options", "preview_interval_ms")
    EXEMPLAR_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    TILEABLE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    exemplar: Image
    width: int
    height: int
    tileable: bool
    options: SynthesisOptions
    preview_interval_ms: int
    def __init__(self, exemplar: _Optional[_Union[Image, _Mapping]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., tileable: bool = ..., options: _Optional[_Union[SynthesisOptions, _Mapping]] = ..., preview_interval_ms: _Optional[int] = ...) -> None: ...

class StylizeRequest(_message.Message):
    __slots__ = ("content", "style", "content_labels", "style_labels", "options", "preview_interval_ms")
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    STYLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_LABELS_FIELD_NUMBER: _ClassVar[int]
    STYLE_LABELS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    content: Image
    style: Image
    content_labels: Image
    style_labels: Image
    options: SynthesisOptions
    preview_interval_ms: int
    def __init__(self, content: _Optional[_Union[Image, _Mapping]] = ..., style: _Optional[_Union[Image, _Mapping]] = ..., content_labels: _Optional[_Union[Image, _Mapping]] = ..., style_labels: _Optional[_Union[Image, _Mapping]] = ..., options: _Optional[_Union[SynthesisOptions, _Mapping]] = ..., preview_interval_ms: _Optional[int] = ...) -> None: ...

class ImageResult(_message.Message):
    __slots__ = ("image", "width", "height", "seconds")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    image: Image
    width: int
    height: int
    seconds: float
    def __init__(self, image: _Optional[_Union[Image, _Mapping]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...

class RenderRequest(_message.Message):
    __slots__ = ("strokes_json", "size", "canvas", "canvas_image")
    STROKES_JSON_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CANVAS_FIELD_NUMBER: _ClassVar[int]
    CANVAS_IMAGE_FIELD_NUMBER: _ClassVar[int]
    strokes_json: str
    size: int
    canvas: str
    canvas_image: Image
    def __init__(self, strokes_json: _Optional[str] = ..., size: _Optional[int] = ..., canvas: _Optional[str] = ..., canvas_image: _Optional[_Union[Image, _Mapping]] = ...) -> None: ...

class RenderReply(_message.Message):
    __slots__ = ("image", "width", "height")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    image: Image
    width: int
    height: int
    def __init__(self, image: _Optional[_Union[Image, _Mapping]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("level", "levels", "step", "total", "loss", "preview")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    LEVELS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    level: int
    levels: int
    step: int
    total: int
    loss: float
    preview: Image
    def __init__(self, level: _Optional[int] = ..., levels: _Optional[int] = ..., step: _Optional[int] = ..., total: _Optional[int] = ..., loss: _Optional[float] = ..., preview: _Optional[_Union[Image, _Mapping]] = ...) -> None: ...

class JobError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class Queued(_message.Message):
    __slots__ = ("position",)
    POSITION_FIELD_NUMBER: _ClassVar[int]
    position: int
    def __init__(self, position: _Optional[int] = ...) -> None: ...

class Started(_message.Message):
    __slots__ = ("worker",)
    WORKER_FIELD_NUMBER: _ClassVar[int]
    worker: str
    def __init__(self, worker: _Optional[str] = ...) -> None: ...

class Cancelled(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("job_id", "seq", "time", "queued", "started", "progress", "result", "error", "cancelled", "image_result", "op_result")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    IMAGE_RESULT_FIELD_NUMBER: _ClassVar[int]
    OP_RESULT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    seq: int
    time: float
    queued: Queued
    started: Started
    progress: Progress
    result: PaintResult
    error: JobError
    cancelled: Cancelled
    image_result: ImageResult
    op_result: OpResult
    def __init__(self, job_id: _Optional[str] = ..., seq: _Optional[int] = ..., time: _Optional[float] = ..., queued: _Optional[_Union[Queued, _Mapping]] = ..., started: _Optional[_Union[Started, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., result: _Optional[_Union[PaintResult, _Mapping]] = ..., error: _Optional[_Union[JobError, _Mapping]] = ..., cancelled: _Optional[_Union[Cancelled, _Mapping]] = ..., image_result: _Optional[_Union[ImageResult, _Mapping]] = ..., op_result: _Optional[_Union[OpResult, _Mapping]] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "op", "state", "created", "started", "finished", "progress", "error", "has_result", "expires")
    ID_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    HAS_RESULT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_FIELD_NUMBER: _ClassVar[int]
    id: str
    op: str
    state: JobState
    created: float
    started: float
    finished: float
    progress: Progress
    error: JobError
    has_result: bool
    expires: float
    def __init__(self, id: _Optional[str] = ..., op: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., created: _Optional[float] = ..., started: _Optional[float] = ..., finished: _Optional[float] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., error: _Optional[_Union[JobError, _Mapping]] = ..., has_result: bool = ..., expires: _Optional[float] = ...) -> None: ...

class JobRef(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListJobsReply(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class OptionInfo(_message.Message):
    __slots__ = ("name", "type", "default", "choices", "min", "max", "help")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FIELD_NUMBER: _ClassVar[int]
    CHOICES_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    HELP_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    default: str
    choices: _containers.RepeatedScalarFieldContainer[str]
    min: float
    max: float
    help: str
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., default: _Optional[str] = ..., choices: _Optional[_Iterable[str]] = ..., min: _Optional[float] = ..., max: _Optional[float] = ..., help: _Optional[str] = ...) -> None: ...

class ImageSlotInfo(_message.Message):
    __slots__ = ("name", "role", "required", "same_size_as", "together_with", "min_side", "help", "unless")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    SAME_SIZE_AS_FIELD_NUMBER: _ClassVar[int]
    TOGETHER_WITH_FIELD_NUMBER: _ClassVar[int]
    MIN_SIDE_FIELD_NUMBER: _ClassVar[int]
    HELP_FIELD_NUMBER: _ClassVar[int]
    UNLESS_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: str
    required: bool
    same_size_as: str
    together_with: str
    min_side: int
    help: str
    unless: str
    def __init__(self, name: _Optional[str] = ..., role: _Optional[str] = ..., required: bool = ..., same_size_as: _Optional[str] = ..., together_with: _Optional[str] = ..., min_side: _Optional[int] = ..., help: _Optional[str] = ..., unless: _Optional[str] = ...) -> None: ...

class OutputInfo(_message.Message):
    __slots__ = ("name", "kind", "filename", "mime", "on_request", "place", "help", "series")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    MIME_FIELD_NUMBER: _ClassVar[int]
    ON_REQUEST_FIELD_NUMBER: _ClassVar[int]
    PLACE_FIELD_NUMBER: _ClassVar[int]
    HELP_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    filename: str
    mime: str
    on_request: bool
    place: str
    help: str
    series: bool
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., filename: _Optional[str] = ..., mime: _Optional[str] = ..., on_request: bool = ..., place: _Optional[str] = ..., help: _Optional[str] = ..., series: bool = ...) -> None: ...

class OpInfo(_message.Message):
    __slots__ = ("name", "description", "options", "images", "outputs", "runs_in", "models", "job", "help", "live")
    class LiveEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    RUNS_IN_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    HELP_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    options: _containers.RepeatedCompositeFieldContainer[OptionInfo]
    images: _containers.RepeatedCompositeFieldContainer[ImageSlotInfo]
    outputs: _containers.RepeatedCompositeFieldContainer[OutputInfo]
    runs_in: str
    models: _containers.RepeatedScalarFieldContainer[str]
    job: bool
    help: str
    live: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., options: _Optional[_Iterable[_Union[OptionInfo, _Mapping]]] = ..., images: _Optional[_Iterable[_Union[ImageSlotInfo, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[OutputInfo, _Mapping]]] = ..., runs_in: _Optional[str] = ..., models: _Optional[_Iterable[str]] = ..., job: bool = ..., help: _Optional[str] = ..., live: _Optional[_Mapping[str, str]] = ...) -> None: ...

class BrushInfo(_message.Message):
    __slots__ = ("name", "fields")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    fields: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., fields: _Optional[_Iterable[str]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "backend", "description", "parameters")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    backend: str
    description: str
    parameters: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., backend: _Optional[str] = ..., description: _Optional[str] = ..., parameters: _Optional[_Mapping[str, str]] = ...) -> None: ...

class BackendInfo(_message.Message):
    __slots__ = ("name", "available", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    available: bool
    reason: str
    def __init__(self, name: _Optional[str] = ..., available: bool = ..., reason: _Optional[str] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_side", "max_strokes", "max_jobs", "max_message_bytes", "result_ttl_seconds")
    MAX_SIDE_FIELD_NUMBER: _ClassVar[int]
    MAX_STROKES_FIELD_NUMBER: _ClassVar[int]
    MAX_JOBS_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    RESULT_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    max_side: int
    max_strokes: int
    max_jobs: int
    max_message_bytes: int
    result_ttl_seconds: float
    def __init__(self, max_side: _Optional[int] = ..., max_strokes: _Optional[int] = ..., max_jobs: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., result_ttl_seconds: _Optional[float] = ...) -> None: ...

class CapabilitiesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CapabilitiesReply(_message.Message):
    __slots__ = ("version", "ops", "brushes", "models", "backends", "devices", "limits")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OPS_FIELD_NUMBER: _ClassVar[int]
    BRUSHES_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    BACKENDS_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    version: str
    ops: _containers.RepeatedCompositeFieldContainer[OpInfo]
    brushes: _containers.RepeatedCompositeFieldContainer[BrushInfo]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    backends: _containers.RepeatedCompositeFieldContainer[BackendInfo]
    devices: _containers.RepeatedScalarFieldContainer[str]
    limits: Limits
    def __init__(self, version: _Optional[str] = ..., ops: _Optional[_Iterable[_Union[OpInfo, _Mapping]]] = ..., brushes: _Optional[_Iterable[_Union[BrushInfo, _Mapping]]] = ..., models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., backends: _Optional[_Iterable[_Union[BackendInfo, _Mapping]]] = ..., devices: _Optional[_Iterable[str]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ...) -> None: ...
