package version

import (
	apimachineryversion "k8s.io/apimachinery/pkg/version"
	basecompatibility "k8s.io/component-base/compatibility"
)

// ServedBy wraps the generic API server's effective version so that GET
// /version answers annex's release (Get) instead of the Kubernetes
// libraries' version. Everything else (the binary, emulation and minimum
// compatibility versions that decide which APIs and feature gates are on)
// stays the Kubernetes version annex is built on. The generic server installs
// /version from Info() alone.
func ServedBy(kube basecompatibility.EffectiveVersion) basecompatibility.EffectiveVersion {
	if kube == nil {
		return nil
	}
	return served{kube}
}

type served struct {
	basecompatibility.EffectiveVersion
}

// Info is annex's version, with the Kubernetes API level annex serves in the
// emulation and minimum compatibility fields.
func (s served) Info() *apimachineryversion.Info {
	info := Get()
	if kube := s.EffectiveVersion.Info(); kube != nil {
		info.EmulationMajor, info.EmulationMinor = kube.EmulationMajor, kube.EmulationMinor
		info.MinCompatibilityMajor, info.MinCompatibilityMinor = kube.MinCompatibilityMajor, kube.MinCompatibilityMinor
	}
	return &info
}
