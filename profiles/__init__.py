"""Device profiles (YAML data in profiles/devices/) and the per-backend profilers."""
