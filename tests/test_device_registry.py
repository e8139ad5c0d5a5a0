"""One registry for sources and outputs: a name → class table filled by a class decorator."""

from __future__ import annotations

import pytest

from device.errors import FaceedgeError
from device.registry import Registry
from device.sources import SOURCE_TYPES, SourceConfig, SyntheticConfig, build_source
from device.types import OUTPUT_TYPES, Output


def test_register_names_the_class_and_refuses_a_second_class_under_one_name():
    things: Registry[type] = Registry("things.type")

    @things.register("a")
    class A:
        pass

    assert A.type == "a" and things.get("a") is A and "a" in things and list(things) == ["a"]
    assert things.register("a")(A) is A  # the same class again (a module imported twice) is fine

    class B:
        pass

    with pytest.raises(ValueError, match="registered twice"):
        things.register("a")(B)
    with pytest.raises(FaceedgeError, match=r"things.type 'c': unknown; choose one of \['a'\]"):
        things.get("c")


def test_sources_and_outputs_use_it():
    import device.outputs.http  # noqa: F401 - registers the HTTP output

    assert {"synthetic", "opencv", "images", "picamera2", "imx500"} <= set(SOURCE_TYPES)
    assert {"jsonl", "http"} <= set(OUTPUT_TYPES)
    assert all(issubclass(OUTPUT_TYPES[name], Output) for name in OUTPUT_TYPES)
    cfg = SyntheticConfig()
    assert build_source(cfg).type == "synthetic"

    class NopeConfig(SourceConfig, tag="nope"):  # a config type no source registered
        pass

    with pytest.raises(FaceedgeError, match="source.type 'nope': unknown"):
        build_source(NopeConfig())


def test_every_output_takes_images_through_the_declared_method():
    """`publish_image` is declared on Output (a no-op there): every output has it, none is probed."""
    from device.outputs import JsonlConfig, JsonlOutput, publish_image
    from device.telemetry import Telemetry

    class Recording(Output):
        def __init__(self):
            self.images = []

        def publish(self, result):
            pass

        def publish_image(self, rgb):
            self.images.append(rgb)

    class Failing(Recording):
        def publish_image(self, rgb):
            raise RuntimeError("boom")

    jsonl = JsonlOutput(JsonlConfig(path="-"), Telemetry())
    rec = Recording()
    publish_image([jsonl, Failing(), rec], "img")  # the JSONL output ignores it; a failing one is logged
    assert rec.images == ["img"]
