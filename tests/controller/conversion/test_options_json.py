"""Converter options parsed by conversion itself: the inverse of ``options_to_json``, errors that name the fields."""

from __future__ import annotations

import pytest

from controller.conversion import InvalidOptionsError, UnknownTargetError, options_from_json
from controller.conversion.registry import options_to_json


def test_options_round_trip_through_json() -> None:
    opts = options_from_json("tflite", {"precision": "fp16", "num_threads": 2})
    assert type(opts).__name__ == "TfliteOptions" and opts.precision == "fp16" and opts.num_threads == 2
    assert options_from_json("tflite", options_to_json(opts)) == opts  # the "type" key is ignored


def test_empty_options_mean_the_profile_recipe() -> None:
    assert options_from_json("onnx", {}) is None
    assert options_from_json("onnx", {"format": "onnx"}) is None  # a pipeline step's format key


def test_unknown_field_and_unknown_target_are_named() -> None:
    with pytest.raises(InvalidOptionsError, match=r"unknown tflite option\(s\) bogus; valid: .*precision") as err:
        options_from_json("tflite", {"bogus": 1})
    assert err.value.http_status == 422
    with pytest.raises(UnknownTargetError, match="registered targets: .*onnx"):
        options_from_json("no-such-target", {"x": 1})
