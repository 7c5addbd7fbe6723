"""Target resolution: what a deployment request names → the artifact each device gets.

A request names a signed manifest, an artifact id or a version id (then each device gets
the version's artifact for its profile, found or built), optionally overridden per
profile. Deployments and A/B promotion both ask this one resolver, so "is this id an
artifact or a version?" is answered in one place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.manifest import Manifest, Thresholds
from controller.registry import InvalidInputError, NotFoundError, Registry

if TYPE_CHECKING:
    from controller.artifacts import ArtifactBuilder


class TargetResolver:
    """Maps deployment targets to artifact ids on one registry.

    Args:
        registry: where artifacts, versions and device profiles are read.
        artifact_builder: finds/builds per-profile artifacts for version ids; without it only
            artifacts already built for the profile deploy.
    """

    def __init__(self, registry: Registry, artifact_builder: ArtifactBuilder | None = None) -> None:
        self.registry = registry
        self.artifact_builder = artifact_builder

    def is_artifact(self, target: Manifest | str) -> bool:
        """True for a manifest or a known artifact id; any other string is taken as a version id."""
        if isinstance(target, Manifest):
            return True
        try:
            self.registry.artifacts.get_artifact(artifact_id=target)
        except NotFoundError:
            return False
        return True

    def artifacts_for(
        self,
        target: Manifest | str | None,
        device_ids: list[str],
        thresholds: Thresholds | None,
        actor: str,
        per_profile: dict[str, Manifest | str] | None = None,
    ) -> dict[str, str]:
        """Device id → artifact id: one given artifact for all, or each profile's artifact.

        ``per_profile`` (profile id → manifest, artifact id or version id) overrides ``target`` for
        the devices of those profiles: one deployment can then carry an ONNX artifact to some devices
        and a TFLite one to others, which a single version (one format) cannot.
        """
        if not per_profile and target is not None and self.is_artifact(target):
            return dict.fromkeys(device_ids, self.artifact_of(target, None, thresholds, actor))
        mapping: dict[str, str] = {}
        resolved: dict[str, str] = {}  # profile → artifact id: the chosen target depends on the profile only
        for device_id in device_ids:
            profile = self.registry.devices.get_device(device_id=device_id).profile
            if not profile:
                raise InvalidInputError(f"device {device_id} has not reported its profile yet; wait for it to connect")
            chosen = (per_profile or {}).get(profile, target)
            if chosen is None:
                raise InvalidInputError(
                    f"nothing to deploy to device {device_id} (profile {profile!r}): per_profile names "
                    f"{sorted(per_profile or {})} and no default target was given"
                )
            if profile not in resolved:
                resolved[profile] = self.artifact_of(chosen, profile, thresholds, actor)
            mapping[device_id] = resolved[profile]
        return mapping

    def artifact_of(
        self, target: Manifest | str, profile: str | None, thresholds: Thresholds | None, actor: str
    ) -> str:
        """Artifact id of a manifest (recorded if new), an artifact id, or a version id's artifact for ``profile``."""
        if isinstance(target, Manifest):
            art = self.registry.artifacts.find_artifact(manifest=target) or self.registry.artifacts.add_artifact(
                manifest=target, actor=actor
            )
            return art.id
        if self.is_artifact(target):
            return target
        version = self.registry.get_version(version_id=target)
        if profile is None:
            raise InvalidInputError(f"version {version.id} needs the device's profile to pick its artifact")
        return self._artifact_for_profile(version.id, profile, thresholds, actor)

    def _artifact_for_profile(self, version_id: str, profile: str, thresholds: Thresholds | None, actor: str) -> str:
        if self.artifact_builder is not None:
            return self.artifact_builder.artifact_for(
                version_id=version_id, profile=profile, thresholds=thresholds, actor=actor
            ).id
        for art in self.registry.artifacts.list_artifacts(version_id=version_id, profile=profile):
            if thresholds is None or art.manifest.get("thresholds") == thresholds.model_dump():
                return art.id
        raise InvalidInputError(
            f"version {version_id} has no artifact for profile {profile!r}; build one with "
            "controller.artifacts.build_artifact or give the fleet service an ArtifactBuilder"
        )
