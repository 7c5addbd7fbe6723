"""Request and response bodies of the REST API (pydantic), shared by the routes and the OpenAPI schema."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ID = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
Technique = Literal["quantize", "prune", "distill", "decompose"]


class CompressionRequest(BaseModel):
    """Start one technique on a model version."""

    model_config = ConfigDict(extra="forbid")
    version_id: str = Field(min_length=1, max_length=64, description="input model version (UUID4)")
    technique: str | None = Field(None, max_length=64, description="technique of this family, e.g. int8-static; "
                                                                   "default from the settings")
    config: dict[str, Any] = Field(default_factory=dict, description="technique parameters (see the technique's "
                                                                      "config); unknown keys are refused")
    profile: str | None = Field(None, max_length=64, description="device profile the output is built for")
    evaluate: bool = Field(True, description="measure size/latency/quality against the input")
    measure_memory: bool = Field(False, description="also measure peak RSS (a subprocess per model; slower)")
    metric: str | None = Field(None, max_length=200, description="quality metric: top1_agreement, cosine, "
                               "mean_abs_diff, sequence_agreement (per-step argmax, CTC) or a hook 'module:function' "
                               "importable by the controller; measured on the 'eval_samples' uploaded with the model "
                               "(held out), else on its calibration 'samples' (flagged in the report)")
    allow_slower: bool = Field(False, description="keep a quantized output even when it is slower than FP32 on "
                               "the controller host (default: fall back to FP16 / INT4 weight-only / FP32, with the "
                               "reason)")


class PipelineStep(BaseModel):
    """One step of a pipeline: a compression technique or a conversion."""

    model_config = ConfigDict(extra="forbid")
    technique: str = Field(min_length=1, max_length=64, description="a compression technique name "
                                                                    "(e.g. int8-static, svd) or 'convert'")
    config: dict[str, Any] = Field(default_factory=dict)


class PipelineRequest(BaseModel):
    """Run several steps in order; each step's output becomes the next step's input and a new version."""

    model_config = ConfigDict(extra="forbid")
    version_id: str = Field(min_length=1, max_length=64)
    steps: list[PipelineStep] = Field(min_length=1, max_length=16)
    profile: str | None = Field(None, max_length=64)
    evaluate: bool = Field(True, description="measure the final output against the input")


class ConversionRequest(BaseModel):
    """Convert a model version to a target format for a device profile (a job)."""

    model_config = ConfigDict(extra="forbid")
    version_id: str = Field(min_length=1, max_length=64)
    target_format: Literal["onnx", "tflite", "coreml", "tensorrt"] | None = Field(
        None, description="defaults to the profile's recipe format")
    profile: str = Field(min_length=1, max_length=64)
    config: dict[str, Any] = Field(default_factory=dict)


class ZooImportRequest(BaseModel):
    """Import a model from the offline zoo as a new model (or a new version of an existing one)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128, description="registry name")
    zoo: str = Field(min_length=1, max_length=128, description="zoo entry, e.g. mnist_cnn")


class TagRequest(BaseModel):
    """Point a tag at a version; ``expected_version_id`` makes it a compare-and-set (null: tag must be new)."""

    model_config = ConfigDict(extra="forbid")
    version_id: str = Field(min_length=1, max_length=64)
    expected_version_id: str | None = Field(None, max_length=64, description="current holder you expect; omit "
                                                                              "to overwrite unconditionally")


class RollbackRequest(BaseModel):
    """Move a tag (default ``production``) back to an earlier version in its lineage (audited)."""

    model_config = ConfigDict(extra="forbid")
    tag: str = Field("production", min_length=1, max_length=64)
    to_version_id: str | None = Field(None, max_length=64, description="default: the previous holder")
    reason: str = Field("", max_length=1000)


class DeviceRegisterRequest(BaseModel):
    """Make a device known before it connects."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    profile: str = Field("", max_length=64)


class DeploymentRequest(BaseModel):
    """Deploy a model version to devices (an artifact per profile is built and signed as needed)."""

    model_config = ConfigDict(extra="forbid")
    version_id: str = Field(min_length=1, max_length=64)
    device_ids: list[str] = Field(min_length=1, max_length=10_000)
    thresholds: dict[str, float] = Field(default_factory=dict, description="benchmark thresholds for the agents")


class DeploymentRollbackRequest(BaseModel):
    """Send the deployment's devices back to what they ran before."""

    model_config = ConfigDict(extra="forbid")
    reason: str = Field("", max_length=1000)
