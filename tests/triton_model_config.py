"""A strict parser for Triton's config.pbtxt: the subset of `inference.ModelConfig` visionbatch writes.

Triton's own `model_config_pb2` comes with tritonclient (and grpc), which the project does not
install; so the messages are rebuilt here with protobuf's descriptor API, transcribing field names,
numbers, types and enum values from triton-inference-server/common, protobuf/model_config.proto
(ModelConfig, ModelInput, ModelOutput, ModelDynamicBatching, ModelInstanceGroup, ModelParameter,
DataType). Parsing
with `google.protobuf.text_format` is then as strict as Triton's: an unknown field, a wrong type or
an unknown enum value fails.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

F = descriptor_pb2.FieldDescriptorProto

DATA_TYPES = ["TYPE_INVALID", "TYPE_BOOL", "TYPE_UINT8", "TYPE_UINT16", "TYPE_UINT32", "TYPE_UINT64", "TYPE_INT8",
              "TYPE_INT16", "TYPE_INT32", "TYPE_INT64", "TYPE_FP16", "TYPE_FP32", "TYPE_FP64", "TYPE_STRING",
              "TYPE_BF16"]


def _enum(owner, name: str, values: list[str]) -> None:
    enum = owner.enum_type.add(name=name)
    for number, value in enumerate(values):
        enum.value.add(name=value, number=number)


def _field(message, name: str, number: int, kind: int, repeated: bool = False, type_name: str | None = None) -> None:
    field = message.field.add(name=name, number=number, type=kind,
                              label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
    if type_name:
        field.type_name = type_name


def _build():
    file = descriptor_pb2.FileDescriptorProto(name="visionbatch_test_model_config.proto", package="inference",
                                              syntax="proto3")
    _enum(file, "DataType", DATA_TYPES)

    model_input = file.message_type.add(name="ModelInput")
    _enum(model_input, "Format", ["FORMAT_NONE", "FORMAT_NHWC", "FORMAT_NCHW"])
    _field(model_input, "name", 1, F.TYPE_STRING)
    _field(model_input, "data_type", 2, F.TYPE_ENUM, type_name=".inference.DataType")
    _field(model_input, "format", 3, F.TYPE_ENUM, type_name=".inference.ModelInput.Format")
    _field(model_input, "dims", 4, F.TYPE_INT64, repeated=True)

    model_output = file.message_type.add(name="ModelOutput")
    _field(model_output, "name", 1, F.TYPE_STRING)
    _field(model_output, "data_type", 2, F.TYPE_ENUM, type_name=".inference.DataType")
    _field(model_output, "dims", 3, F.TYPE_INT64, repeated=True)
    _field(model_output, "label_filename", 4, F.TYPE_STRING)

    batching = file.message_type.add(name="ModelDynamicBatching")
    _field(batching, "preferred_batch_size", 1, F.TYPE_INT32, repeated=True)
    _field(batching, "max_queue_delay_microseconds", 2, F.TYPE_UINT64)
    _field(batching, "preserve_ordering", 3, F.TYPE_BOOL)

    group = file.message_type.add(name="ModelInstanceGroup")
    _enum(group, "Kind", ["KIND_AUTO", "KIND_GPU", "KIND_CPU", "KIND_MODEL"])
    _field(group, "name", 1, F.TYPE_STRING)
    _field(group, "count", 2, F.TYPE_INT32)
    _field(group, "gpus", 3, F.TYPE_INT32, repeated=True)
    _field(group, "kind", 4, F.TYPE_ENUM, type_name=".inference.ModelInstanceGroup.Kind")

    parameter = file.message_type.add(name="ModelParameter")
    _field(parameter, "string_value", 1, F.TYPE_STRING)

    config = file.message_type.add(name="ModelConfig")
    # map<string, ModelParameter> parameters = 14: protobuf's map, a repeated nested entry message
    entry = config.nested_type.add(name="ParametersEntry")
    entry.options.map_entry = True
    _field(entry, "key", 1, F.TYPE_STRING)
    _field(entry, "value", 2, F.TYPE_MESSAGE, type_name=".inference.ModelParameter")
    _field(config, "name", 1, F.TYPE_STRING)
    _field(config, "platform", 2, F.TYPE_STRING)
    _field(config, "max_batch_size", 4, F.TYPE_INT32)
    _field(config, "input", 5, F.TYPE_MESSAGE, repeated=True, type_name=".inference.ModelInput")
    _field(config, "output", 6, F.TYPE_MESSAGE, repeated=True, type_name=".inference.ModelOutput")
    _field(config, "instance_group", 7, F.TYPE_MESSAGE, repeated=True, type_name=".inference.ModelInstanceGroup")
    _field(config, "default_model_filename", 8, F.TYPE_STRING)
    _field(config, "dynamic_batching", 11, F.TYPE_MESSAGE, type_name=".inference.ModelDynamicBatching")
    _field(config, "parameters", 14, F.TYPE_MESSAGE, repeated=True, type_name=".inference.ModelConfig.ParametersEntry")
    _field(config, "backend", 17, F.TYPE_STRING)

    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelConfig"))


ModelConfig = _build()


def parse(text: str):
    """Parse config.pbtxt text strictly; raises google.protobuf.text_format.ParseError."""
    from google.protobuf import text_format

    return text_format.Parse(text, ModelConfig())
