"""An OCI bundle on disk: its spec, its rootfs mounts, its entrypoint, the context it yields."""
