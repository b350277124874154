"""Device profiles (YAML data in ``devices/``) and the profilers (installed as
``lkca_edge.profiles``).

``devices`` reads the profiles, ``local`` measures an artifact on this host in a child process
(``python -m lkca_edge.profiles.measure``), ``adb`` runs one on an Android phone; ``schema`` is
the ``ProfileResult`` they all return. Importing this package is light (no torch, no runtime).
``lkca_edge.pipelines.profile.profile_artifact`` chooses between them.
"""

from lkca_edge.profiles.schema import LatencyStats, ProfileResult

__all__ = ["LatencyStats", "ProfileResult", "get_profile", "load_profiles"]


def load_profiles(profiles_dir=None):
    from lkca_edge.profiles.devices import load_profiles as _load

    return _load(profiles_dir)


def get_profile(name, profiles_dir=None):
    from lkca_edge.profiles.devices import get_profile as _get

    return _get(name, profiles_dir)
