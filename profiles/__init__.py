"""Device profiles (YAML data in profiles/devices/) and the per-backend profilers.

``profile_artifact(path, device="host", ...) -> ProfileResult`` is the Python API (what
``lkca-edge profile`` and the bench call); ``load_profiles()`` / ``get_profile(name)`` read the
device profiles. Importing this package is light (no torch, no runtime): the measuring child
process ``python -m profiles.measure`` imports it too.
"""

from profiles.schema import LatencyStats, ProfileResult

__all__ = ["DeviceProfile", "LatencyStats", "ProfileResult", "get_profile", "load_profiles",
           "profile_artifact"]


def profile_artifact(path, device="host", threads=None, runs=100, warmup=10, verify=True,
                     profiles_dir=None, **options) -> ProfileResult:
    """Profile an exported artifact for a device profile (see ``profiles.profiler``)."""
    from profiles.profiler import profile_artifact as _profile

    return _profile(path, device=device, threads=threads, runs=runs, warmup=warmup, verify=verify,
                    profiles_dir=profiles_dir, **options)


def load_profiles(profiles_dir=None):
    from profiles.devices import load_profiles as _load

    return _load(profiles_dir)


def get_profile(name, profiles_dir=None):
    from profiles.devices import get_profile as _get

    return _get(name, profiles_dir)


def __getattr__(name):
    if name == "DeviceProfile":
        from profiles.devices import DeviceProfile

        return DeviceProfile
    raise AttributeError(f"module 'profiles' has no attribute {name!r}")
